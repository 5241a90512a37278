"""Dev-set predictions of finished runs, kept when the run directories are gone (paired bootstraps of
studies spread over sessions): :class:`PredictionStore`."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import NaskdError
from .utils.io import write_json


def load_json(path) -> dict | None:
    """The JSON object in ``path``, or None when there is no such file."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


# what a table needs of a finished run's metrics.json when the run itself is gone
_KEPT_METRICS = ("status", "description", "dev", "parameters", "parameters_without_embeddings", "train_seconds",
                 "best_epoch")


# a run's settings kept with its predictions: enough to rebuild its student's architecture without the run
# (its genotype is in the metrics' description)
CONFIG_KEPT = ("min_params", "sample_seed", "seed", "teacher", "genotype", "student", "bilstm_hidden", "bilstm_relu",
               "bilstm_embed", "truncate_k", "width", "embed_width")


def label_string(labels) -> str:
    return "".join(str(int(v)) for v in labels)


class PredictionStore:
    """Dev predictions of finished runs, kept in one JSON file after the runs' directories are gone.

    A paired bootstrap needs every model's prediction for every dev sentence, and run directories are not
    kept forever: a study records the runs it reads (predicted labels, the metrics its tables use, the
    teacher's predictions they were distilled against) and reads a run from here when its directory is gone.
    Keyed by run directory name; a teacher by its run directory name as well. Errors (a run neither finished
    nor recorded, a prediction count that is not the dev set's) raise :class:`NaskdError`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = load_json(self.path) or {"about": "dev-set predicted labels (one digit per sentence, in dev "
                                                      "order) of finished runs", "runs": {}}
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
                raise NaskdError(f"{run}: no finished run there and no record of it in {self.path}: train it first")
            out = np.array([int(c) for c in s["predictions"]])
        if len(out) != n:
            raise NaskdError(f"{run}: predictions for {len(out)} dev sentences, dev has {n}")
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
                entry["metrics"]["config"] = {k: c[k] for k in CONFIG_KEPT if k in c}
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
