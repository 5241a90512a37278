"""Helpers shared by the benchmark scripts: timing and Markdown/JSON tables."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from naskd.utils.io import write_json, write_text
from naskd.utils.runtime import median_seconds

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def timed(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    return median_seconds(fn, repeat, warmup)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")          # a pipe inside a cell (a genotype's layers) is escaped

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def publish(name: str, title: str, rows: list[dict], columns: list[str], command: str, notes: str = "") -> str:
    table = markdown_table(rows, columns)
    text = f"## {title}\n\nMeasured with `{command}` on {machine()}.\n\n{table}\n"
    if notes:
        text += f"\n{notes}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{name}.md", text)
    write_json(RESULTS / f"{name}.json", {"title": title, "command": command, "machine": machine(),
                                          "rows": rows, "notes": notes})
    print(text, flush=True)
    return text


def retrain_once(out: Path, flags: dict) -> dict:
    """`naskd retrain` into ``out``, resumably: a finished run is read, a stopped one resumed (one stopped
    before its first checkpoint started again)."""
    from naskd.students.retrain import resolve_retrain_config, retrain

    m = load_json(out / "metrics.json")
    if m is not None and m.get("status") == "finished":
        return m
    resume = (out / "checkpoint.pt").is_file()
    # a run stopped before its first checkpoint left nothing to keep (its config at most): start it again
    restart = not resume and out.is_dir() and any(out.iterdir())
    return retrain(resolve_retrain_config({**flags, "out": str(out)}), resume=resume, overwrite=restart)


def run_naskd(argv: list, out=None) -> None:
    """``naskd ARGV`` in this process, resuming the run in ``out`` when one is there (its marker); a
    non-zero exit ends the study with the command that failed."""
    from naskd.cli import main

    if out is not None and (Path(out) / "naskd-run.json").is_file():
        argv = [*argv, "--resume"]
    code = main(argv)
    if code != 0:
        raise SystemExit(f"naskd {' '.join(map(str, argv))} exited with {code}")


def load_json(path) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


EVIDENCE = "dev_predictions_sst2.json"        # under RESULTS
# what a table needs of a finished run's metrics.json when the run itself is gone
_KEPT_METRICS = ("status", "description", "dev", "parameters", "parameters_without_embeddings", "train_seconds")


def label_string(labels) -> str:
    return "".join(str(int(v)) for v in labels)


class Evidence:
    """Dev predictions of finished runs, committed under benchmarks/results.

    `runs/` is not kept between sessions, and a paired bootstrap needs every model's prediction for every dev
    sentence: each study script records the runs it reads (predicted labels, the metrics its tables use, the
    teacher it was distilled from) and reads a run from here when its directory is gone. Keyed by run
    directory name (each study's tag is part of it); the teacher by its run directory name as well.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else RESULTS / EVIDENCE
        self.data = load_json(self.path) or {"about": "dev-set predicted labels (one digit per sentence, in dev "
                                                      "order) of finished runs; written by benchmarks/", "runs": {}}
        self.changed = False

    def stored(self, run) -> dict | None:
        return self.data["runs"].get(Path(run).name)

    @staticmethod
    def _finished_here(run) -> dict | None:
        m = load_json(Path(run) / "metrics.json")
        ok = m is not None and m.get("status") == "finished" and (Path(run) / "dev_logits.npy").is_file()
        return m if ok else None

    def metrics(self, run) -> dict | None:
        """The run's metrics if it has finished: from its directory, else from the committed record."""
        m = self._finished_here(run)
        if m is not None:
            return m
        s = self.stored(run)
        return None if s is None or "metrics" not in s else s["metrics"]

    def from_store(self, run) -> bool:
        """True when the run is read from the committed record (its directory holds no finished run)."""
        return self._finished_here(run) is None and self.stored(run) is not None

    def labels(self, run, n: int, *, finished: bool = True):
        """Predicted dev labels of a run (its dev_logits.npy, else the committed record); ``n`` is the number
        of dev sentences, checked. ``finished=False`` for a run without a training status (a teacher run)."""
        import numpy as np

        p = Path(run) / "dev_logits.npy"
        here = self._finished_here(run) is not None if finished else p.is_file()
        if here:
            out = np.load(p).argmax(-1)
        else:
            s = self.stored(run)
            if s is None:
                raise SystemExit(f"{run}: no finished run there and no record of it in {self.path}: train it first")
            out = np.array([int(c) for c in s["predictions"]])
        if len(out) != n:
            raise SystemExit(f"{run}: predictions for {len(out)} dev sentences, dev has {n}")
        return out

    def record(self, run, labels, *, metrics: dict | None = None, teacher_labels=None, command: str = "") -> None:
        """Keep a finished run's dev predictions (and the teacher's they were distilled against)."""
        entry = {"run": str(run), "predictions": label_string(labels)}
        if metrics is not None:
            entry["metrics"] = {k: metrics[k] for k in _KEPT_METRICS if k in metrics}
            entry["metrics"]["status"] = "finished"
            cfg = Path(run) / "config.yaml"
            if cfg.is_file():
                import yaml

                c = yaml.safe_load(cfg.read_text()) or {}
                entry["metrics"]["config"] = {k: c[k] for k in ("min_params", "sample_seed", "seed", "teacher",
                                                                 "genotype", "student") if k in c}
        if teacher_labels is not None:
            entry["teacher_predictions"] = label_string(teacher_labels)
        if command:
            entry["command"] = command
        if self.data["runs"].get(Path(run).name) != entry:
            self.data["runs"][Path(run).name] = entry
            self.changed = True

    def teacher_differs(self, run, teacher_labels) -> bool:
        """True when a recorded run was distilled against a teacher whose dev predictions differ from these."""
        s = self.stored(run)
        return s is not None and "teacher_predictions" in s and s["teacher_predictions"] != label_string(teacher_labels)

    def save(self) -> None:
        if self.changed:
            write_json(self.path, self.data)
            self.changed = False
