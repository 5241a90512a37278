"""The criteria registry: criteria are registered by name and chosen with weights, e.g.
``--kd soft_ce=0.5,hard_ce=0.5,pkd=10`` (a bare name means weight 1)."""
from __future__ import annotations

import math

from ..errors import ConfigError

CRITERIA: dict[str, type] = {}


def register_criterion(name: str):
    def deco(cls):
        cls.name = name
        CRITERIA[name] = cls
        return cls
    return deco


def parse_kd(spec) -> list[tuple[str, float]]:
    """``"soft_ce=0.5,pkd"`` or ``{"soft_ce": 0.5, "pkd": 1}`` -> [(name, weight)]; unknown names fail."""
    if isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, w = part.partition("=")
            items.append((name.strip(), w.strip() if w else 1.0))
    out = []
    for name, w in items:
        if name not in CRITERIA:
            raise ConfigError(f"unknown distillation criterion '{name}'; known: {', '.join(sorted(CRITERIA))}")
        try:
            weight = float(w)
        except (TypeError, ValueError):
            raise ConfigError(f"criterion {name}: weight {w!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"criterion {name}: weight must be a finite number >= 0, got {w}")
        out.append((name, weight))
    if not out:
        raise ConfigError("--kd names no criterion; e.g. --kd soft_ce=0.5,hard_ce=0.5")
    if len({n for n, _ in out}) != len(out):
        raise ConfigError(f"--kd names a criterion twice: {spec}")
    if not any(w > 0 for _, w in out):
        raise ConfigError(f"--kd weights are all 0 ({spec}): nothing would be trained; give one a weight > 0")
    return out


def parse_pairs(text: str | None) -> list[tuple[int, int]]:
    """``"2:2,4:4"`` -> [(2, 2), (4, 4)]: explicit (student cell, teacher layer) pairs for pkd."""
    if not text:
        return []
    try:
        pairs = [tuple(int(x) for x in p.split(":")) for p in str(text).split(",") if p.strip()]
    except ValueError:
        pairs = None
    if pairs is None or any(len(p) != 2 for p in pairs):
        raise ConfigError(f"--pkd-pairs expects student:teacher pairs of integers like 2:2,4:4, got {text}")
    return pairs
