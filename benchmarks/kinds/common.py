"""Helpers shared by the study kinds (benchmarks/kinds/): the study being run, timing, Markdown/JSON tables,
resumable runs and the committed dev predictions."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from naskd.evidence import PredictionStore, load_json  # noqa: F401  (load_json: for the kinds)
from naskd.utils.io import write_json, write_text

# where tables go and the committed dev predictions are kept: benchmarks/results, or NASKD_RESULTS_DIR (a
# study's tables and predictions store elsewhere, e.g. a test's: copy dev_predictions_sst2.json there to
# rebuild a table from the committed predictions)
RESULTS = Path(os.environ.get("NASKD_RESULTS_DIR") or Path(__file__).resolve().parent.parent / "results")
DATA_DIR = os.environ.get("NASKD_DATA_DIR", "../shared/data")     # the default `data_dir` of every kind

# the study being run, set by benchmarks/run.py: its name, the tables its config names, and the command that
# reproduces them (written into every table)
CURRENT: dict = {"name": None, "tables": [], "command": "python benchmarks/run.py"}


def study_command() -> str:
    """The command that runs the current study again (``OMP_NUM_THREADS=... python benchmarks/run.py NAME
    [--set ...]``)."""
    return CURRENT["command"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()          # a parameter of a kind's PARAMS without a default


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def timed(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    from naskd.utils.runtime import median_seconds

    return median_seconds(fn, repeat, warmup)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")          # a pipe inside a cell (a genotype's layers) is escaped

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def publish(name: str, title: str, rows: list[dict], columns: list[str], command: str | None = None,
            notes: str = "") -> str:
    """Write benchmarks/results/NAME.{md,json} (the table, its title and the command that measured it; by
    default the current study's) and print the Markdown."""
    command = command or study_command()
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


EVIDENCE = "dev_predictions_sst2.json"        # under RESULTS


class Evidence(PredictionStore):
    """The committed dev predictions of benchmarks/ (``benchmarks/results/dev_predictions_sst2.json``)."""

    def __init__(self, path: Path | None = None):
        super().__init__(path if path is not None else RESULTS / EVIDENCE)
