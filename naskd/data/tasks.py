"""The task registry: what each task reads, predicts and is scored by.

A task is plain data. Adding one is a call to :func:`register_task`; nothing else changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import NaskdError

SINGLE, PAIR, REGRESSION, TAGGING = "single", "pair", "regression", "tagging"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str                      # single | pair | regression | tagging
    subdir: str                    # folder under the data root ("glue/SST-2", "conll2000")
    files: dict                    # split -> file name; a missing split is carved from train
    metric: str                    # key of naskd.data.metrics.METRICS
    main_metric: str               # the number used to pick the best epoch
    labels: tuple = ()             # class names (as written in the file) or tag set; () for regression
    # GLUE TSV layout
    header: bool = True
    n_columns: int = 0
    text_columns: tuple = ()       # column indices of the sentence(s)
    label_column: int = -1
    score_range: tuple | None = None
    # CoNLL layout
    conll_columns: int = 0
    tag_column: int = -1
    entity_types: tuple = ()
    # carving a dev split when the release has none
    carve_fraction: float = 0.1
    carve_seed: int = 13
    large: bool = False            # large tasks get bigger memories / fewer augmentation rounds
    teacher_recipe: str = ""

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == REGRESSION else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def label_index(self) -> dict:
        return {lab: i for i, lab in enumerate(self.labels)}


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    key = name.lower().replace("-", "")
    if key not in _TASKS:
        raise NaskdError(f"unknown task '{name}'; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[key]


def task_names() -> list[str]:
    return sorted(_TASKS)


def iob2_tags(types: tuple) -> tuple:
    return ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))


register_task(TaskSpec("sst2", SINGLE, "glue/SST-2", {"train": "train.tsv", "dev": "dev.tsv"},
                       "accuracy", "accuracy", labels=("0", "1"), header=True, n_columns=2,
                       text_columns=(0,), label_column=1, large=True))
register_task(TaskSpec("cola", SINGLE, "glue/CoLA", {"train": "train.tsv", "dev": "dev.tsv"},
                       "matthews", "mcc", labels=("0", "1"), header=False, n_columns=4,
                       text_columns=(3,), label_column=1))
register_task(TaskSpec("mrpc", PAIR, "glue/MRPC", {"train": "train.tsv", "dev": "dev.tsv"},
                       "accuracy_f1", "f1", labels=("0", "1"), header=True, n_columns=5,
                       text_columns=(3, 4), label_column=0))
register_task(TaskSpec("rte", PAIR, "glue/RTE", {"train": "train.tsv", "dev": "dev.tsv"},
                       "accuracy", "accuracy", labels=("not_entailment", "entailment"), header=True,
                       n_columns=4, text_columns=(1, 2), label_column=3))
register_task(TaskSpec("stsb", REGRESSION, "glue/STS-B", {"train": "train.tsv", "dev": "dev.tsv"},
                       "correlation", "pearson", header=True, n_columns=10, text_columns=(7, 8),
                       label_column=9, score_range=(0.0, 5.0)))
_CHUNK_TYPES = ("NP", "VP", "PP", "ADVP", "SBAR", "ADJP", "PRT", "CONJP", "INTJ", "LST", "UCP")
register_task(TaskSpec("conll2000", TAGGING, "conll2000", {"train": "train.txt"}, "span_f1", "f1",
                       labels=iob2_tags(_CHUNK_TYPES), conll_columns=3, tag_column=2,
                       entity_types=_CHUNK_TYPES))
_NER_TYPES = ("PER", "LOC", "ORG", "MISC")
register_task(TaskSpec("conll2003", TAGGING, "conll2003", {"train": "train.txt", "dev": "valid.txt"},
                       "span_f1", "f1", labels=iob2_tags(_NER_TYPES), conll_columns=4, tag_column=3,
                       entity_types=_NER_TYPES))


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """The data root: ``--data-dir``, else ``NASKD_DATA_DIR``; a clear error when neither exists."""
    value = data_dir or os.environ.get("NASKD_DATA_DIR")
    if not value:
        raise NaskdError(
            "no data directory given; pass --data-dir DIR or set NASKD_DATA_DIR "
            "(a folder laid out as glue/SST-2/train.tsv, conll2000/train.txt, ...; e.g. ../shared/data)"
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise NaskdError(f"data directory {root} {what}; pass --data-dir DIR or set NASKD_DATA_DIR")
    return root


def task_dir(spec: TaskSpec, data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the task's files: ``<root>/<subdir>``, or the given folder itself."""
    root = data_root(data_dir)
    train = spec.files["train"]
    if (root / train).is_file():  # a task directory given directly
        return root
    d = root / spec.subdir
    if not (d / train).is_file():
        raise NaskdError(
            f"task {spec.name}: expected {d / train} (data root laid out as GLUE's release / CoNLL "
            f"column files), or pass the task folder itself with --data-dir"
        )
    return d
