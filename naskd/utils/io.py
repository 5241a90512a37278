"""Atomic file writes, stale temporary files, and run directories.

Every output goes to a temporary file in the destination folder and is renamed into place, so a
killed process leaves either the old file or the new one, never half of one. The temporary names carry
the host and process id (``.NAME.naskd~HOST~PID~XXXX.tmp``) so that :func:`clean_stale_temps` can remove
those of processes that died (a SIGKILL leaves full-size checkpoints and cache arrays behind) without
touching those of a process still writing. Files get the mode an ordinary ``open()`` would give them
(0666 less the umask), not ``mkstemp``'s 0600.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import NaskdError

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "host")[:64]
_TEMP = re.compile(r"\.naskd~(?P<host>[^~]+)~(?P<pid>\d+)~[^~/]*\.tmp(?:\.[A-Za-z0-9]+)?$")


def temp_name(name: str) -> str:
    """The prefix of a temporary file for ``name`` written by this process (see :func:`clean_stale_temps`)."""
    return f".{name}.naskd~{_HOST}~{os.getpid()}~"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:              # another user's live process
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files that killed naskd processes left in ``folder``; return them.

    A temporary file is stale when it was made on this host by a process that no longer runs; those of
    live processes and of other hosts (a shared file system) are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        m = _TEMP.search(p.name)
        if not m or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (mode 0666 less the
    umask). ``suffix`` is appended to the temporary name for writers that insist on an extension."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_name(path.name), suffix=".tmp" + suffix, dir=path.parent)
    except OSError as e:
        raise NaskdError(f"cannot write {path}: {e.strerror or e}; choose another output location") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def writing(dest: str | os.PathLike, flag: str = "-o") -> Iterator[Path]:
    """:func:`atomic_path` for a file the user named with ``flag``: operating-system failures while it is
    written (a read-only or full file system, a folder that cannot be made, /proc) become one
    :class:`NaskdError` naming ``dest``; nothing is left behind."""
    try:
        with atomic_path(dest) as tmp:
            yield tmp
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise NaskdError(f"cannot write {dest}: {why}{f' ({e.filename})' if e.filename else ''}; choose "
                         f"another {flag}") from None


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


def read_json(path: str | os.PathLike, *, missing: str, error=NaskdError, way_out: str | None = None) -> Any:
    """The JSON document in ``path``; ``error(missing)`` when there is no such file, and an ``error`` naming
    the file and the problem (not UTF-8: the byte and its offset; not JSON: the parser's message), followed
    by ``way_out``, when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise error(missing)
    tail = f"; {way_out}" if way_out else ""
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{p} is not UTF-8 JSON (byte 0x{e.object[e.start]:02x} at offset {e.start}){tail}") from None
    except json.JSONDecodeError as e:
        raise error(f"{p} is not valid JSON: {e}{tail}") from None


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


def save_npy(path: str | os.PathLike, array) -> None:
    """``numpy.save`` through a temporary file."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array))


def save_pretrained_atomic(obj, folder: str | os.PathLike) -> None:
    """``obj.save_pretrained(folder)`` (a tokenizer or config), each file renamed into place whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_name(folder.name), suffix=".tmp", dir=folder) as tmp:
        obj.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file():
                dest = folder / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(f, 0o666 & ~_umask())
                os.replace(f, dest)


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
