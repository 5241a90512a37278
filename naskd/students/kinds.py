"""The student table: every kind of student naskd trains, saves, loads, benches and exports, one registration
each (as ops, criteria, strategies and space kinds are).

A kind gives:

* ``name``: the architecture written to ``student.json`` (and read back); ``aliases``: older names still read;
* ``summary``: one line for help and docs;
* ``model_class()``: the module class (``kind_of(model)`` finds a model's kind by it);
* ``fields(model)``: what ``student.json`` holds for it beyond task, kind and num_labels (the round trip:
  ``build(info, path, source)`` makes the untrained module those fields describe; the caller loads the weights);
  ``save_files(model, path)``: files it needs beside the weights (a truncated teacher's config.json);
* ``recipe``: the training defaults `naskd retrain` applies before a config file and flags (the paper's);
* ``retrain(cfg, spec, teacher_dir, genotype, vocab_size)``: the untrained student of a retrain, its depth M_s,
  its width and a note on its initialisation; ``describe(cfg, model, genotype)``: its line in the log.

`naskd retrain --student` names how a student is obtained: ``genotype`` (a search's genotype.json, whose space
kind decides the student kind: cell, macro or teacher -> truncated_teacher), ``random`` (a sampled cell
genotype), or a kind by name (``bilstm_soft``, ``truncated_teacher``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import NaskdError


@dataclass(frozen=True)
class StudentKind:
    name: str
    summary: str
    model_class: Callable[[], type]
    fields: Callable
    build: Callable
    retrain: Callable
    describe: Callable
    recipe: dict = field(default_factory=dict)
    aliases: tuple = ()
    save_files: Callable | None = None     # (model, directory): files it needs beside the weights


STUDENT_KINDS: dict[str, StudentKind] = {}
_ALIASES: dict[str, str] = {}


def student_way_out(path: str | os.PathLike) -> str:
    """How to get an intact student back at ``path`` (its run directory named where it is a run's student/)."""
    path = Path(path)
    run = f"--out {path.parent}" if path.name == "student" else "--out <its run directory>"
    return (f"retrain the student (`naskd retrain ... {run} --overwrite`) or copy an intact student directory "
            "in its place")


def register_student_kind(kind: StudentKind) -> StudentKind:
    STUDENT_KINDS[kind.name] = kind
    for a in kind.aliases:
        _ALIASES[a] = kind.name
    return kind


def student_kind(name: str, source: str = "student.json") -> StudentKind:
    """The kind named ``name`` (or one of its older names); NaskdError naming ``source`` and the known kinds."""
    name = _ALIASES.get(name, name)
    if name not in STUDENT_KINDS:
        raise NaskdError(f"{source}: unknown student architecture '{name}' (known: {', '.join(STUDENT_KINDS)})")
    return STUDENT_KINDS[name]


def kind_of(model) -> StudentKind:
    """The kind of a student module; TypeError for a module that is no student kind."""
    for kind in STUDENT_KINDS.values():
        if isinstance(model, kind.model_class()):
            return kind
    raise TypeError(f"cannot save a {type(model).__name__} as a student (no student kind registered for it; "
                    "see naskd/students/kinds.py)")


def genotype_kind(genotype) -> str:
    """The space kind of a genotype: cell, macro or teacher."""
    from ..genotype import Genotype

    return "cell" if isinstance(genotype, Genotype) else genotype.to_dict().get("kind", "cell")


def retrain_kind(student: str, genotype) -> StudentKind:
    """The kind `naskd retrain --student STUDENT` trains (``genotype``: its genotype, or None)."""
    if student in ("genotype", "random"):
        return STUDENT_KINDS[{"cell": "cell", "macro": "macro", "teacher": "truncated_teacher"}[genotype_kind(genotype)]]
    return student_kind(student, "--student")


def _teacher_tables(teacher_dir):
    from ..network import teacher_embedding_tables

    return teacher_embedding_tables(teacher_dir)


# --- cell: the fixed student of a DARTS cell genotype -------------------------------------------------------
def _cell_class():
    from .fixed import FixedStudent

    return FixedStudent


def _cell_fields(model) -> dict:
    return {"width": model.width, "vocab_size": model.embeddings.word.num_embeddings,
            "max_positions": model.embeddings.position.num_embeddings,
            "embed_width": model.embeddings.embed_width, "genotype": model.genotype.to_dict()}


def _cell_build(info: dict, path: Path, source: str):
    from ..genotype import Genotype
    from .fixed import FixedStudent

    genotype = Genotype.from_dict(info["genotype"], source)
    return FixedStudent(genotype, kind=info["kind"], num_labels=info["num_labels"], vocab_size=info["vocab_size"],
                        max_positions=info["max_positions"], width=info["width"], embed_width=info.get("embed_width"))


def _cell_retrain(cfg, spec, teacher_dir, genotype, vocab_size):
    from .fixed import FixedStudent

    width = cfg.width or genotype.width
    model = FixedStudent(genotype, kind=spec.kind, num_labels=spec.num_labels, vocab_size=vocab_size, width=width,
                         dropout=cfg.dropout, embed_width=cfg.embed_width)
    return model, genotype.layers, width, model.embeddings.init_from_teacher(_teacher_tables(teacher_dir))


register_student_kind(StudentKind(
    name="cell", aliases=("genotype",),
    summary="the fixed student of a cell genotype (DARTS cells stacked, `naskd search --space nas_kd|adabert`)",
    model_class=_cell_class, fields=_cell_fields, build=_cell_build, retrain=_cell_retrain,
    describe=lambda cfg, model, g: f"{cfg.student} {g.describe()}"))


# --- macro: a sentence encoder of the macro space -----------------------------------------------------------
def _macro_class():
    from .macro import MacroStudent

    return MacroStudent


def _macro_build(info: dict, path: Path, source: str):
    from ..space.macro import MacroGenotype
    from .macro import MacroStudent

    genotype = MacroGenotype.from_dict(info["genotype"], f"{source}: its genotype")
    if not isinstance(info["pair"], bool):
        raise TypeError(f"'pair' must be true or false, got {info['pair']!r}")
    return MacroStudent(genotype, vocab_size=info["vocab_size"], kind=info["kind"], num_labels=info["num_labels"],
                        pair=info["pair"])


def _macro_retrain(cfg, spec, teacher_dir, genotype, vocab_size):
    from .macro import MacroStudent

    model = MacroStudent(genotype, vocab_size=vocab_size, kind=spec.kind, num_labels=spec.num_labels,
                         pair=spec.is_pair, dropout=cfg.dropout)
    return model, genotype.depth, genotype.width, model.init_from_teacher(_teacher_tables(teacher_dir))


register_student_kind(StudentKind(
    name="macro",
    summary="a sentence encoder of the macro space: embedding width, depth, each layer's op and width, pooling",
    model_class=_macro_class,
    fields=lambda m: {"pair": m.pair, "vocab_size": m.word.num_embeddings, "genotype": m.genotype.to_dict()},
    build=_macro_build, retrain=_macro_retrain, describe=lambda cfg, model, g: f"{cfg.student} {g.describe()}",
    # its layers' widths differ, so there is no layer map for PKD: logits only
    recipe={"kd": "logit_mse"}))


# --- bilstm_soft: Tang et al. 2019's distilled BiLSTM -------------------------------------------------------
def _bilstm_class():
    from .baselines import BiLSTMStudent

    return BiLSTMStudent


def _bilstm_build(info: dict, path: Path, source: str):
    from .baselines import BiLSTMStudent

    return BiLSTMStudent(vocab_size=info["vocab_size"], kind=info["kind"], num_labels=info["num_labels"],
                         pair=info["pair"], embed=info["embed"], hidden=info["hidden"], relu=info["relu"])


def _bilstm_retrain(cfg, spec, teacher_dir, genotype, vocab_size):
    from .baselines import BiLSTMStudent

    model = BiLSTMStudent(vocab_size=vocab_size, kind=spec.kind, num_labels=spec.num_labels, pair=spec.is_pair,
                          embed=cfg.bilstm_embed, hidden=cfg.bilstm_hidden, relu=cfg.bilstm_relu, dropout=cfg.dropout)
    return model, 1, 2 * cfg.bilstm_hidden, model.init_from_teacher(_teacher_tables(teacher_dir))


register_student_kind(StudentKind(
    name="bilstm_soft", aliases=("bilstm",),
    summary="Tang et al. 2019's distilled BiLSTM (a sentence classifier): --bilstm-embed, --bilstm-hidden, "
            "--bilstm-relu",
    model_class=_bilstm_class,
    fields=lambda m: {"pair": m.pair, "vocab_size": m.word.num_embeddings, **m.sizes},
    build=_bilstm_build, retrain=_bilstm_retrain,
    describe=lambda cfg, model, g: (f"bilstm_soft (BiLSTM {model.sizes['hidden']}x2, ReLU {model.sizes['relu']})"),
    # Tang et al. 2019: logit MSE alone (alpha = 0), AdaDelta (lr 1.0, rho 0.95), batch 50
    recipe={"kd": "logit_mse", "optimizer": "adadelta", "lr": 1.0, "batch_size": 50, "weight_decay": 0.0,
            "warmup_ratio": 0.0}))


# --- truncated_teacher: the teacher's first k layers (BERT_k) -----------------------------------------------
def _truncated_class():
    from .baselines import TruncatedTeacher

    return TruncatedTeacher


def _truncated_files(model, path: Path) -> None:
    from ..utils.io import atomic_path

    with atomic_path(path / "config.json") as tmp:
        model.encoder.config.to_json_file(str(tmp))


def _truncated_build(info: dict, path: Path, source: str):
    from transformers import AutoConfig, AutoModel

    from ..teachers.model import _drop_pooler, check_json_files
    from .baselines import TruncatedTeacher

    if not (path / "config.json").is_file():
        raise NaskdError(f"student directory {path} is incomplete: missing config.json")
    check_json_files(path, ("config.json",), student_way_out(path))
    try:
        encoder = _drop_pooler(AutoModel.from_config(AutoConfig.from_pretrained(str(path))))
    except (OSError, ValueError) as e:
        raise NaskdError(f"{path / 'config.json'} does not describe a model ({str(e).splitlines()[0][:160]}); "
                         f"{student_way_out(path)}") from None
    return TruncatedTeacher(encoder, info["kind"], info["num_labels"], info.get("pooling", "mean"))


def truncate_k(cfg, info: dict) -> int:
    """Layers a truncated_teacher keeps: --truncate-k, by default ceil(M_t / 2)."""
    return cfg.truncate_k or math.ceil(int(info["num_layers"]) / 2)


def _truncated_retrain(cfg, spec, teacher_dir, genotype, vocab_size):
    from ..teachers.model import read_teacher_info
    from .baselines import truncated_teacher

    if genotype is not None:              # a genotype of the teacher space
        k, note = genotype.k, f"the teacher's first {genotype.k} layers and its head"
    else:
        info = read_teacher_info(teacher_dir)
        k = truncate_k(cfg, info)
        note = f"the teacher's first {k} of {info['num_layers']} layers and its head"
    model = truncated_teacher(teacher_dir, k, dropout=cfg.dropout)
    return model, k, model.hidden_size, note


register_student_kind(StudentKind(
    name="truncated_teacher",
    summary="the teacher's first k layers and its head (BERT_k, Sun et al. 2019): --truncate-k, or a teacher-space "
            "genotype",
    model_class=_truncated_class,
    fields=lambda m: {"pooling": m.pooling, "layers": m.num_layers, "width": m.hidden_size},
    save_files=_truncated_files, build=_truncated_build, retrain=_truncated_retrain,
    describe=lambda cfg, model, g: (f"{cfg.student} {g.describe()}" if g is not None
                                    else f"truncated_teacher (k={model.num_layers})"),
    # BERT_k-PKD (Sun et al. 2019): fine-tuning rates for pretrained layers; the default criteria
    # (soft_ce=0.5,hard_ce=0.5,pkd=1, or substructure for tagging) include PKD on [CLS]
    recipe={"lr": 5e-5, "weight_decay": 0.01, "warmup_ratio": 0.1}))
