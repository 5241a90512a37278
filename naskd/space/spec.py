"""Search spaces as data: ``search_spaces/*.yaml`` read into the op and aggregator tables."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..assets import asset_path
from ..config import load_yaml
from ..errors import ConfigError
from .aggregators import AGGREGATORS, build_aggregator
from .ops import OPS, build_op

_KEYS = {"name", "description", "ops", "aggregators", "nodes", "width"}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    ops: tuple
    aggregators: tuple
    nodes: int = 3
    width: int = 64
    description: str = ""
    source: str = ""

    def check(self, width: int | None = None) -> None:
        """Fail now, naming the problem, if any op cannot be built at ``width`` (None: the space's own)."""
        width = self.width if width is None else width
        if self.nodes < 1:
            raise ConfigError(f"search space {self.name}: nodes must be at least 1, got {self.nodes}")
        if width < 1:
            raise ConfigError(f"width must be an integer >= 1, got {width}")
        if not self.ops or all(o == "none" for o in self.ops):
            raise ConfigError(f"search space {self.name}: needs at least one op other than 'none'")
        if not self.aggregators:
            raise ConfigError(f"search space {self.name}: needs at least one aggregator")
        for names, table in ((self.ops, OPS), (self.aggregators, AGGREGATORS)):
            if len(set(names)) != len(names):
                raise ConfigError(f"search space {self.name}: repeated {table.what} names in {list(names)}")
        for o in self.ops:
            build_op(o, width)
        for a in self.aggregators:
            build_aggregator(a, width)

    def to_dict(self) -> dict:
        return {"name": self.name, "ops": list(self.ops), "aggregators": list(self.aggregators),
                "nodes": self.nodes, "width": self.width}

    @classmethod
    def from_dict(cls, data: dict, source: str, default_name: str = "space") -> "SearchSpace":
        """A space from its declarative form (a search_spaces/ file, or ``to_dict`` as a run's config
        records it); a ConfigError naming ``source`` when it is malformed. Not checked against the op table."""
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        for key in ("ops", "aggregators"):
            if not isinstance(data.get(key), list):
                raise ConfigError(f"{source}: '{key}' must be a list of names")
        numbers = {}
        for key, default in (("nodes", 3), ("width", 64)):
            v = data.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int):     # its range: check()
                raise ConfigError(f"{source}: '{key}' must be an integer >= 1, got {v!r}")
            numbers[key] = v
        return cls(name=str(data.get("name", default_name)), ops=tuple(map(str, data["ops"])),
                   aggregators=tuple(map(str, data["aggregators"])), nodes=numbers["nodes"],
                   width=numbers["width"], description=str(data.get("description", "")), source=str(source))


def load_space(name_or_path: str) -> SearchSpace:
    path = asset_path("search_spaces", name_or_path)
    space = SearchSpace.from_dict(load_yaml(path), str(path), default_name=Path(path).stem)
    space.check()
    return space
