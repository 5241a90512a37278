"""Where naskd keeps what it computes once per machine: teacher outputs and latency tables."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` when given (``--cache-dir``), else ``$NASKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/naskd``
    or ``~/.cache/naskd``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("NASKD_CACHE_DIR"):
        return Path(os.environ["NASKD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "naskd"
