"""Student directories: safetensors weights, ``student.json`` (architecture, kind, sizes, genotype), the
tokenizer, and for a truncated teacher its Hugging Face ``config.json``. Nothing is unpickled."""
from __future__ import annotations

import os
from pathlib import Path


from ..data.tasks import get_task
from ..errors import NaskdError
from ..teachers.model import check_json_files, check_record, check_weights, load_weights_into
from ..utils.io import read_json, save_pretrained_atomic, save_safetensors, write_json

from .kinds import kind_of, student_kind, student_way_out

STUDENT_FORMAT = 1


def architecture_of(model) -> tuple[str, dict]:
    """(the student kind's name, the fields student.json holds for ``model``): naskd.students.kinds."""
    kind = kind_of(model)
    return kind.name, kind.fields(model)


def save_student(path: str | os.PathLike, model, tokenizer, *, task: str, extra: dict | None = None):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    kind = kind_of(model)
    arch, fields = kind.name, kind.fields(model)
    save_safetensors(path / "model.safetensors", model.state_dict(), metadata={"format": "naskd-student"})
    save_pretrained_atomic(tokenizer, path)
    if kind.save_files is not None:
        kind.save_files(model, path)
    info = {"naskd": "student", "format": STUDENT_FORMAT, "architecture": arch, "task": task,
            "kind": model.kind, "num_labels": model.num_labels, **fields}
    info.update(extra or {})
    write_json(path / "student.json", info)


def build_student(info: dict, path: Path, source: str = "student.json"):
    """An untrained module of the architecture ``info`` describes (weights are loaded by the caller).

    Raises :class:`NaskdError` when ``info`` lacks a field its architecture needs or holds one of the
    wrong type (a corrupt or hand-edited student.json)."""
    try:
        return _build_student(info, path, source)
    except (KeyError, TypeError, ValueError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else f"holds a bad value ({str(e).splitlines()[0][:160]})"
        raise NaskdError(f"{source} {what}: it is corrupt or from another version; "
                         f"{student_way_out(path)}") from None


def _build_student(info: dict, path: Path, source: str):
    return student_kind(info.get("architecture", "cell"), source).build(info, path, source)


# sizes a student.json may hold; each, where present, a whole number >= 1
_SIZES = ("num_labels", "vocab_size", "max_positions", "width", "embed_width", "embed", "hidden", "relu", "layers")


def read_student_info(path: str | os.PathLike) -> dict:
    path = Path(path)
    if (path / "student").is_dir() and not (path / "student.json").is_file():
        path = path / "student"
    info_path = path / "student.json"
    info = read_json(info_path, missing=f"{path} is not a naskd student directory (no student.json)",
                     way_out=f"it is corrupt; {student_way_out(path)}")
    if not isinstance(info, dict) or info.get("naskd") not in (None, "student"):
        raise NaskdError(f"{info_path} does not describe a naskd student; {student_way_out(path)}")
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise NaskdError(f"student directory {path} is incomplete: missing {', '.join(missing)}")
    check_record(info, info_path, required=("task", "kind", "num_labels"), sizes=_SIZES,
                 way_out=student_way_out(path))
    # truncated or corrupt files end here, before any work, for every reader (evaluate, bench, export, --init)
    check_weights(path / "model.safetensors", student_way_out(path))
    check_json_files(path, ("tokenizer.json",), student_way_out(path))
    info["_path"] = str(path)
    return info


def load_student(path: str | os.PathLike):
    """Load a retrained student in one call: returns (model in eval mode, tokenizer, info)."""
    from transformers import AutoTokenizer

    info = read_student_info(path)
    path = Path(info["_path"])
    get_task(info["task"])
    model = build_student(info, path, str(path / "student.json"))
    load_weights_into(model, path / "model.safetensors", "student.json", student_way_out(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001  the Rust tokenizers library raises plain Exceptions
        raise NaskdError(f"the tokenizer files of {path} cannot be loaded ({str(e).strip()[:160]}); "
                         f"{student_way_out(path)}") from None
    return model, tokenizer, info
