"""Where the declarative assets (teacher recipes, search spaces) live."""
from __future__ import annotations

from pathlib import Path

from .errors import NaskdError

ROOT = Path(__file__).resolve().parent.parent


def asset_path(kind: str, name: str) -> Path:
    """``kind``/``name``.yaml from the checkout (``teachers/``, ``search_spaces/``), or a file path."""
    p = Path(name).expanduser()
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    folder = ROOT / kind
    cand = folder / f"{name}.yaml"
    if cand.is_file():
        return cand
    known = sorted(x.stem for x in folder.glob("*.yaml")) if folder.is_dir() else []
    raise NaskdError(f"no {kind} entry named '{name}' (looked for {cand}); known: {', '.join(known) or 'none'}; "
                     "or pass the path of a YAML file")
