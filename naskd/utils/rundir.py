"""Run directories that nothing can lose: a marker names the command that made each one.

Every command that writes a directory (``--out``) writes ``naskd-run.json`` into it when the run starts:
the command, the settings it ran with, when and where, and every later resume. The marker decides what
``--overwrite`` and ``--resume`` may do:

- ``--overwrite`` replaces only a directory that holds a run of the *same* command (its marker says so),
  and never one that is, contains or lies inside a path the command reads (model, teacher, genotype,
  data root, cache, ...), nor the working directory or an ancestor of it. A folder naskd did not make is
  never deleted.
- ``--resume`` continues only a run of the same command, and only with the settings it was started
  with: a difference that changes the result is refused before any work, listing the keys. The keys in
  ``RESUME_MAY_CHANGE`` may differ (they do not change what is computed, or extend it: ``epochs``); each
  resume is recorded in the marker, and the run's ``config.yaml`` is never rewritten.

Runs made before markers existed (a ``config.yaml`` and no marker) can be resumed, after the same
comparison against their ``config.yaml``; they cannot be overwritten (remove them by hand).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable

from ..errors import NaskdError
from .cachedir import default_cache_dir
from .io import clean_stale_temps, write_json

MARKER = "naskd-run.json"

# Settings a resume may change, with what changing them does (README, "Resuming a run").
RESUME_MAY_CHANGE = {
    "epochs": "extends (or shortens) the run; the learning-rate schedule is recomputed for the new total",
    "stop_after_steps": "only where this process stops",
    "checkpoint_every": "only how often a checkpoint is written",
    "log_every": "only how often progress is logged",
    "show": "only how many examples are printed",
    "device": "the hardware; results agree up to floating-point rounding",
    "cache_dir": "only where the teacher's outputs are cached",
    "out": "the same directory, named another way",
    "trials": "extends the study (tune) or the discrete search (spos)",
}


def _real(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def _read_mapping(path: Path, parse) -> dict | None:
    """The mapping ``parse`` reads from the text of ``path``; None when the file is missing, unreadable,
    not text, not parseable or not a mapping."""
    if not path.is_file():
        return None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):            # UnicodeDecodeError, JSONDecodeError are ValueErrors
        return None
    except Exception as e:                   # yaml.YAMLError
        if type(e).__module__.startswith("yaml"):
            return None
        raise
    return data if isinstance(data, dict) else None


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of the run in ``folder``, or None when there is none (or it is unreadable)."""
    m = _read_mapping(Path(folder) / MARKER, json.loads)
    return m if m is not None and isinstance(m.get("command"), str) else None


def _norm(v):
    return json.loads(json.dumps(v, default=str))


def changed_settings(saved: dict, new: dict, may_change: Iterable[str] = RESUME_MAY_CHANGE) -> dict:
    """``{key: (saved value, new value)}`` for every setting both know that differs, except ``may_change``."""
    allowed = set(may_change)
    return {k: (saved[k], new[k]) for k in sorted(set(saved) & set(new))
            if k not in allowed and _norm(saved[k]) != _norm(new[k])}


def _legacy_settings(folder: Path) -> dict | None:
    """The settings in ``config.yaml`` of a run made before markers existed."""
    import yaml

    return _read_mapping(folder / "config.yaml", yaml.safe_load)


def _protected(out: Path, reads: Iterable) -> str | None:
    """Why ``out`` may not be replaced, or None."""
    cwd = _real(os.getcwd())
    if _within(cwd, out):
        return "it is the working directory or an ancestor of it" if out != cwd else "it is the working directory"
    if out == _real(Path.home()) or out.parent == out:
        return "it is the home or root directory"
    for r in reads:
        if r is None or str(r) == "":
            continue
        rp = _real(r)
        if _within(out, rp):
            return f"it {'is' if out == rp else 'lies inside'} {r}, which this command reads"
        if _within(rp, out):
            return f"it contains {r}, which this command reads"
    return None


def _check_writable(p: Path, shown, way_out: str) -> None:
    """:class:`NaskdError` unless files can be written in the folder ``p`` (resolved; made if missing): it,
    or its nearest existing ancestor, must be a folder this process may write in (read-only file systems
    included)."""
    base = p
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise NaskdError(f"cannot write {shown}: {base} is a file, not a folder; {way_out}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise NaskdError(f"cannot write {shown}: {base} is not writable (permissions or a read-only file "
                         f"system); {way_out}")


def check_run_dir(out: str | os.PathLike, *, command: str, overwrite: bool, resume: bool, reads: Iterable = (),
                  settings: dict | None = None) -> Path:
    """Check, before any work and without touching the disk, that ``command`` may write its run to ``out``.

    ``reads``: every path the command reads (protected from ``--overwrite``). ``settings``: the run's
    settings, compared on ``--resume`` with those the run started with. Raises :class:`NaskdError` with the
    way out; returns ``out`` as a Path."""
    out_arg = Path(out)
    reads = [r for r in reads if r is not None and str(r) != ""]
    if resume and overwrite:
        raise NaskdError("--resume and --overwrite contradict each other; pick one")
    out = _real(out_arg)
    if out.exists() and not out.is_dir():
        raise NaskdError(f"--out {out_arg} is a file, not a directory; name a directory for the run")
    _check_writable(out, f"--out {out_arg}", "name another --out")
    nonempty = out.is_dir() and any(out.iterdir())
    marker = read_marker(out) if out.is_dir() else None
    if resume:
        if not nonempty:
            raise NaskdError(f"--resume given but {out_arg} holds no run to resume; drop --resume to start one")
        saved = None
        if marker is not None:
            if marker["command"] != command:
                raise NaskdError(f"--resume: {out_arg} holds a naskd {marker['command']} run, not a {command} run; "
                                 "name the right --out")
            saved = marker.get("settings")
        else:
            saved = _legacy_settings(out)
            if saved is None:
                raise NaskdError(f"--resume: {out_arg} is not a naskd run (no {MARKER} or config.yaml); naskd does "
                                 "not write into it: name the run's directory with --out")
        if settings is not None and saved:
            if marker is None:            # config.yaml of an older naskd holds the teacher run it resolved
                settings = {k: v for k, v in settings.items() if not (k == "teacher" and v is None)}
            diff = changed_settings(saved, settings)
            if diff:
                shown = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
                raise NaskdError(f"--resume with settings that differ from the run in {out_arg}: {shown}. Resume with "
                                 f"the settings it started with ({out_arg}/config.yaml), or start a new run with "
                                 f"another --out; only {', '.join(sorted(RESUME_MAY_CHANGE))} may change on resume")
        return out_arg
    if nonempty:
        if not overwrite:
            raise NaskdError(f"run directory {out_arg} already exists; pass --resume to continue it, --overwrite to "
                             "replace it, or --out to write elsewhere")
        why = _protected(out, reads)
        if why:
            raise NaskdError(f"--overwrite refused: {out_arg} may not be replaced because {why}; name another --out")
        if marker is None:
            raise NaskdError(f"--overwrite refused: {out_arg} is not a run naskd made (no {MARKER}); naskd never "
                             "deletes a directory it did not create: remove it yourself or name another --out")
        if marker["command"] != command:
            raise NaskdError(f"--overwrite refused: {out_arg} holds a naskd {marker['command']} run, not a {command} "
                             "run; name another --out")
    return out_arg


def prepare_run_dir(out: str | os.PathLike, *, command: str, overwrite: bool, resume: bool, reads: Iterable = (),
                    settings: dict | None = None) -> Path:
    """:func:`check_run_dir`, then make the directory: created (or emptied, for ``overwrite``) with a new
    marker; on ``resume`` kept as is, the resume recorded in the marker. Stale temporary files of killed
    processes are removed either way. Returns the directory."""
    reads = list(reads)
    out = check_run_dir(out, command=command, overwrite=overwrite, resume=resume, reads=reads, settings=settings)
    marker = read_marker(out)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        if resume:
            clean_stale_temps(out)
            if marker is None:            # a run made before markers: adopt it
                marker = {"command": command, "created": None, "settings": _legacy_settings(out), "resumes": []}
            saved = marker.get("settings") or {}
            changes = {k: [saved.get(k), v] for k, v in (settings or {}).items()
                       if k in saved and _norm(saved[k]) != _norm(v)}
            marker.setdefault("resumes", []).append({"at": now, "host": socket.gethostname(), "changed": changes})
            write_json(out / MARKER, marker)
            return out
        if out.is_dir() and any(out.iterdir()):      # overwrite, checked above: a run of this command
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MARKER, {"command": command, "created": now, "host": socket.gethostname(),
                                  "cwd": os.getcwd(), "settings": _norm(settings) if settings is not None else None,
                                  "resumes": []})
    except OSError as e:
        raise NaskdError(f"cannot write the run directory {out}: {e.strerror or e}; name another --out") from None
    return out


def check_output_file(path: str | os.PathLike, *, overwrite: bool, reads: Iterable = (), inside: Iterable = (),
                      flag: str = "-o") -> Path:
    """Check, before any work, that a single output file may be written: refuse a directory, a file the
    command reads (``reads``), an existing file inside one of the folders ``inside`` (a run's own record),
    an existing file without ``overwrite``, or a place that cannot be written. Returns the path."""
    p = Path(path)
    rp = _real(p)
    if rp.is_dir():
        raise NaskdError(f"{p} is a directory; name a file to write with {flag}")
    for r in reads:
        if r is not None and str(r) != "" and _real(r) == rp:
            raise NaskdError(f"{flag} {p} is {r}, which this command reads; name another file")
    for d in inside:
        if rp.exists() and _within(rp, _real(d)):
            raise NaskdError(f"{flag} {p} is a file of {d}, which this command reads; it is never replaced: "
                             "name another file")
    if rp.exists() and not overwrite:
        raise NaskdError(f"{p} already exists; pass --overwrite to replace it or {flag} to write elsewhere")
    _check_writable(rp.parent, p, f"choose another {flag}")
    return p


def reads_of(cfg, *extra) -> list:
    """Every path a run configuration reads (for :func:`check_run_dir`'s ``reads``): its teacher run (the
    default ``runs/<task>-teacher`` when none is named), genotype, init student, augmented run, POS corpus,
    latency table, data root and teacher cache, plus ``extra``."""
    reads = [getattr(cfg, k, None) for k in ("teacher", "genotype", "init", "augmented", "pos_corpus",
                                             "latency_table")]
    task = getattr(cfg, "task", None)
    if getattr(cfg, "teacher", "x") is None and task:
        reads.append(Path("runs") / f"{task}-teacher")
    if getattr(cfg, "augmented", "x") is None and getattr(cfg, "augment", False) and task:
        reads.append(Path("runs") / f"{task}-augment")

    reads.append(data_root_or_none(getattr(cfg, "data_dir", None)))
    if hasattr(cfg, "cache_dir"):
        reads.append(default_cache_dir(cfg.cache_dir))
    return [r for r in (*reads, *extra) if r is not None and str(r) != ""]


def data_root_or_none(data_dir) -> Path | None:
    """The data root ``--data-dir`` / ``NASKD_DATA_DIR`` names, or None when there is none."""
    from ..data.tasks import data_root

    try:
        return data_root(data_dir)
    except NaskdError:
        return None


def run_settings(cfg) -> dict:
    """The settings a run is compared on when resumed: every field of its configuration dataclass."""
    import dataclasses

    settings = dataclasses.asdict(cfg)
    if settings.get("storage"):             # a database password is never written down
        from .urls import shown as _shown

        settings["storage"] = _shown(settings["storage"])
    return _norm(settings)
