"""Student directories: safetensors weights, ``student.json`` (kind, genotype, sizes), tokenizer."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..data.tasks import get_task
from ..errors import NaskdError
from ..genotype import Genotype
from ..utils.io import save_safetensors, write_json
from .fixed import FixedStudent

STUDENT_FORMAT = 1


def save_student(path: str | os.PathLike, model: FixedStudent, tokenizer, *, task: str, extra: dict | None = None):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_safetensors(path / "model.safetensors", model.state_dict(), metadata={"format": "naskd-student"})
    tokenizer.save_pretrained(str(path))
    info = {"naskd": "student", "format": STUDENT_FORMAT, "architecture": "genotype", "task": task,
            "kind": model.kind, "num_labels": model.head.proj.out_features, "width": model.width,
            "vocab_size": model.embeddings.word.num_embeddings,
            "max_positions": model.embeddings.position.num_embeddings,
            "genotype": model.genotype.to_dict()}
    info.update(extra or {})
    write_json(path / "student.json", info)


def read_student_info(path: str | os.PathLike) -> dict:
    path = Path(path)
    if (path / "student").is_dir() and not (path / "student.json").is_file():
        path = path / "student"
    info_path = path / "student.json"
    if not info_path.is_file():
        raise NaskdError(f"{path} is not a naskd student directory (no student.json)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise NaskdError(f"{info_path} is not valid JSON: {e}") from None
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise NaskdError(f"student directory {path} is incomplete: missing {', '.join(missing)}")
    info["_path"] = str(path)
    return info


def load_student(path: str | os.PathLike):
    """Load a retrained student in one call: returns (model in eval mode, tokenizer, info)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = read_student_info(path)
    path = Path(info["_path"])
    genotype = Genotype.from_dict(info["genotype"], str(path / "student.json"))
    get_task(info["task"])
    model = FixedStudent(genotype, kind=info["kind"], num_labels=info["num_labels"], vocab_size=info["vocab_size"],
                         max_positions=info["max_positions"], width=info["width"])
    state = load_file(str(path / "model.safetensors"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise NaskdError(f"weights in {path / 'model.safetensors'} do not match student.json: {e}") from None
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(path)), info
