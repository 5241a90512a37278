"""Atomic file writes and run directories.

Every output goes to a temporary file in the destination folder and is renamed into place, so a
killed process leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import NaskdError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line (a log; a torn last line is skipped by :func:`read_jsonl`)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=_json_default) + "\n")
        f.flush()


def read_json(path: str | os.PathLike, *, missing: str, error=NaskdError) -> Any:
    """The JSON document in ``path``; ``error(missing)`` when there is no such file, and an ``error`` naming
    the file and the parse problem when it is not JSON."""
    p = Path(path)
    if not p.is_file():
        raise error(missing)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{p} is not valid JSON: {e}") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def prepare_run_dir(out: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """Create the run directory, refusing to clobber an existing one.

    - new directory: created;
    - existing and ``resume``: kept as is (the caller reads its checkpoint);
    - existing and ``overwrite``: emptied;
    - existing otherwise: :class:`NaskdError` naming both ways out.
    """
    out = Path(out)
    if resume and overwrite:
        raise NaskdError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and any(out.iterdir()):
        if resume:
            return out
        if overwrite:
            shutil.rmtree(out)
        else:
            raise NaskdError(
                f"run directory {out} already exists; pass --resume to continue it, "
                f"--overwrite to replace it, or --out to write elsewhere"
            )
    elif resume:
        raise NaskdError(f"--resume given but {out} holds no run to resume")
    out.mkdir(parents=True, exist_ok=True)
    return out
