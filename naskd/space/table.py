"""A name -> constructor table with parameterised families (``conv3``, ``attn8``, ...)."""
from __future__ import annotations

import re
from typing import Callable

from ..errors import ConfigError


class Table:
    def __init__(self, what: str):
        self.what = what
        self.exact: dict[str, Callable] = {}
        self.families: list[tuple[re.Pattern, str, Callable]] = []

    def register(self, name: str, ctor: Callable | None = None):
        def deco(fn):
            self.exact[name] = fn
            return fn
        return deco(ctor) if ctor is not None else deco

    def register_family(self, pattern: str, example: str, ctor: Callable | None = None):
        """``pattern`` is a regex whose groups are integer arguments, e.g. ``conv(\\d+)`` for ``conv3``."""
        def deco(fn):
            self.families.append((re.compile(pattern + r"$"), example, fn))
            return fn
        return deco(ctor) if ctor is not None else deco

    def resolve(self, name: str) -> Callable:
        if name in self.exact:
            return self.exact[name]
        for pat, _, fn in self.families:
            m = pat.match(name)
            if m:
                args = [int(g) for g in m.groups()]
                return lambda dim, _fn=fn, _a=args: _fn(dim, *_a)
        raise ConfigError(f"unknown {self.what} '{name}'; known: {', '.join(self.known())}")

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except ConfigError:
            return False

    def known(self) -> list[str]:
        return sorted(self.exact) + [f"{p.pattern.rstrip('$')} (e.g. {ex})" for p, ex, _ in self.families]
