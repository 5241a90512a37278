"""Any trained model directory, student or teacher, behind one loader.

``naskd evaluate``, ``naskd bench`` and ``naskd export`` take ``--model PATH`` where PATH is a student
directory of `naskd retrain` (``student.json``; its run directory works too) or a teacher run of
`naskd teacher` (``teacher.json``). Both forward ``(input_ids, attention_mask, token_type_ids,
word_starts)`` to a dict holding ``logits``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .errors import NaskdError


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    info: dict
    role: str              # "student" or "teacher"
    task: str
    max_length: int
    path: Path

    @property
    def name(self) -> str:
        if self.role == "teacher":
            return f"teacher ({Path(str(self.info.get('base', 'encoder'))).name}, {self.info['num_layers']} layers)"
        kind = self.info.get("student") or self.info.get("architecture", "student")
        run = self.path.parent.name if self.path.name == "student" else self.path.name
        return f"{kind} ({run})"

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


def _max_length(value, source: Path) -> int:
    """The saved ``max_length`` (128 when none was saved); :class:`NaskdError` when it is not a whole number
    of at least 1."""
    if value is None:
        return 128
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NaskdError(f"{source}: max_length {value!r} is not a whole number of at least 1; the file is "
                         "corrupt or was edited by hand: restore it, or train the model again")
    return value


def load_model(path: str | os.PathLike) -> LoadedModel:
    """The model of a student directory (or its run directory) or a teacher run. :class:`NaskdError` when
    ``path`` is missing, a file, neither kind of directory, or holds truncated or corrupt files."""
    p = Path(path)
    if not p.exists():
        raise NaskdError(f"model directory {p} does not exist")
    if not p.is_dir():
        raise NaskdError(f"--model {p} is a file; pass the directory that holds it: a student directory "
                         "(student.json, from `naskd retrain`) or a teacher run (teacher.json, from `naskd teacher`)")
    if (p / "teacher.json").is_file():
        from .teachers.model import load_teacher

        model, tok, info = load_teacher(p)
        recipe = info.get("recipe")
        max_length = _max_length(recipe.get("max_length") if isinstance(recipe, dict) else None, p / "teacher.json")
        return LoadedModel(model, tok, info, "teacher", info["task"], max_length, p)
    if (p / "student.json").is_file() or (p / "student" / "student.json").is_file():
        from .students.io import load_student

        model, tok, info = load_student(p)
        return LoadedModel(model, tok, info, "student", info["task"],
                           _max_length(info.get("max_length"), Path(info["_path"]) / "student.json"),
                           Path(info["_path"]))
    raise NaskdError(f"{p} is neither a student directory (student.json, from `naskd retrain`) nor a teacher "
                     "run (teacher.json, from `naskd teacher`)")
