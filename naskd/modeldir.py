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


def load_model(path: str | os.PathLike) -> LoadedModel:
    p = Path(path)
    if not p.exists():
        raise NaskdError(f"model directory {p} does not exist")
    if (p / "teacher.json").is_file():
        from .teachers.model import load_teacher

        model, tok, info = load_teacher(p)
        max_length = int(info.get("recipe", {}).get("max_length", 128))
        return LoadedModel(model, tok, info, "teacher", info["task"], max_length, p)
    if (p / "student.json").is_file() or (p / "student" / "student.json").is_file():
        from .students.io import load_student

        model, tok, info = load_student(p)
        return LoadedModel(model, tok, info, "student", info["task"], int(info.get("max_length") or 128),
                           Path(info["_path"]))
    raise NaskdError(f"{p} is neither a student directory (student.json, from `naskd retrain`) nor a teacher "
                     "run (teacher.json, from `naskd teacher`)")
