"""The genotype: the discrete architecture derived from the alphas, as immutable plain data.

For each intermediate node, the top-k incoming edges (k = 2) ranked by their strongest op other than
``none``, each with that op; the aggregator by argmax. One cell description when alphas are shared by
all cells (DARTS' default), one per cell otherwise. JSON round-trips exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import NaskdError
from .network import edge_list
from .utils.io import read_json, write_json

FORMAT = 1


@dataclass(frozen=True)
class Genotype:
    space: str
    ops: tuple                     # the space's op names, so a genotype from another space is caught
    aggregators: tuple
    nodes: int
    layers: int
    width: int
    cells: tuple                   # cells[c][node] = ((op, input), ...); len(cells) in (1, layers)
    aggregator: str | None

    def cell(self, c: int) -> tuple:
        return self.cells[0] if len(self.cells) == 1 else self.cells[c]

    def edges(self, c: int = 0) -> set:
        """{(node, input, op)} of cell c."""
        return {(i, j, op) for i, node in enumerate(self.cell(c)) for op, j in node}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "space": self.space, "ops": list(self.ops),
                "aggregators": list(self.aggregators), "nodes": self.nodes, "layers": self.layers,
                "width": self.width, "shared": len(self.cells) == 1,
                "cells": [[[[op, j] for op, j in node] for node in cell] for cell in self.cells],
                "aggregator": self.aggregator}

    @classmethod
    def from_dict(cls, d: dict, source: str = "genotype") -> "Genotype":
        """The genotype a JSON mapping describes (as :meth:`to_dict` writes it); one :class:`NaskdError`
        naming ``source`` and the problem when it is not one: not a mapping, a key missing, a number that
        is not a whole number in its range (nodes, layers, width >= 1; input indices 0..node+1), a cell,
        node or edge of the wrong shape, a node with no edges, an op or aggregator not in the tables."""
        where = f"{source} is not a valid genotype"
        if not isinstance(d, dict):
            raise NaskdError(f"{where}: it holds a JSON {_json_type(d)}, not an object of space, ops, nodes, "
                             "layers, width, cells (as `naskd search` writes genotype.json)")
        missing = [k for k in ("space", "ops", "nodes", "layers", "width", "cells") if k not in d]
        if missing:
            raise NaskdError(f"{where}: missing {', '.join(repr(k) for k in missing)} (a genotype.json from "
                             "`naskd search` or `naskd derive` has them all)")
        if d.get("format", FORMAT) != FORMAT:
            raise NaskdError(f"{where}: format {d['format']!r}, this naskd reads format {FORMAT}")
        for key in ("ops", "aggregators"):
            names = d.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise NaskdError(f"{where}: '{key}' must be a list of names, got {names!r}")
        if not isinstance(d["space"], str):
            raise NaskdError(f"{where}: 'space' must be a name, got {d['space']!r}")
        agg = d.get("aggregator")
        if agg is not None and not isinstance(agg, str):
            raise NaskdError(f"{where}: 'aggregator' must be a name or null, got {agg!r}")
        numbers = {k: _whole(d[k], f"{where}: '{k}'", 1) for k in ("nodes", "layers", "width")}
        cells = d["cells"]
        if not isinstance(cells, list) or not cells:
            raise NaskdError(f"{where}: 'cells' must be a non-empty list of cells (one, or one per layer)")
        parsed = []
        for c, cell in enumerate(cells):
            if not isinstance(cell, list):
                raise NaskdError(f"{where}: cells[{c}] must be a list of nodes, got {cell!r}")
            nodes = []
            for i, node in enumerate(cell):
                at = f"cells[{c}][{i}] (cell {c}, node {i})"
                if not isinstance(node, list):
                    raise NaskdError(f"{where}: {at} must be a list of [op, input] edges, got {node!r}")
                if not node:
                    raise NaskdError(f"{where}: {at} has no edges; every node reads at least one input")
                edges = []
                for e, edge in enumerate(node):
                    if not (isinstance(edge, list) and len(edge) == 2 and isinstance(edge[0], str)):
                        raise NaskdError(f"{where}: {at} edge {e} must be [op name, input index], got {edge!r}")
                    edges.append((edge[0], _whole(edge[1], f"{where}: {at} edge {e}: input index", 0)))
                nodes.append(tuple(edges))
            parsed.append(tuple(nodes))
        g = cls(space=d["space"], ops=tuple(d["ops"]), aggregators=tuple(d.get("aggregators", ())),
                nodes=numbers["nodes"], layers=numbers["layers"], width=numbers["width"], cells=tuple(parsed),
                aggregator=agg)
        g.check(source)
        return g

    def check(self, source: str = "genotype") -> None:
        """Raise :class:`NaskdError` naming ``source`` unless this is a buildable genotype: nodes, layers,
        width >= 1; one cell description or one per layer, each of ``nodes`` nodes; every node with at least
        one edge, each an op of the op table (and of the genotype's own ``ops``, never 'none') reading an
        input 0..node+1; the aggregator, if any, in the aggregator table."""
        from .space.aggregators import AGGREGATORS
        from .space.ops import OPS

        for name in ("nodes", "layers", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NaskdError(f"{source}: {name} must be an integer >= 1, got {value!r}")
        if len(self.cells) not in (1, self.layers):
            raise NaskdError(f"{source}: {len(self.cells)} cell descriptions for {self.layers} layers "
                             "(give one shared cell or one per layer)")
        for c, cell in enumerate(self.cells):
            if len(cell) != self.nodes:
                raise NaskdError(f"{source}: cell {c} has {len(cell)} nodes, expected {self.nodes}")
            for i, node in enumerate(cell):
                if not node:
                    raise NaskdError(f"{source}: cell {c} node {i} has no edges; every node reads at least one input")
                for op, j in node:
                    if op not in OPS:
                        raise NaskdError(f"{source}: op '{op}' is not in the op table; known: "
                                         f"{', '.join(OPS.known())}")
                    if op == "none":
                        raise NaskdError(f"{source}: 'none' cannot be a chosen op")
                    if self.ops and op not in self.ops:
                        raise NaskdError(f"{source}: op '{op}' is not among the genotype's ops "
                                         f"({', '.join(self.ops)})")
                    if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < i + 2:
                        raise NaskdError(f"{source}: node {i} cannot read input {j!r} (valid: 0..{i + 1})")
        if self.aggregator is not None:
            if self.aggregator not in AGGREGATORS:
                raise NaskdError(f"{source}: aggregator '{self.aggregator}' is not in the aggregator table; "
                                 f"known: {', '.join(AGGREGATORS.known())}")
            if self.aggregators and self.aggregator not in self.aggregators:
                raise NaskdError(f"{source}: aggregator '{self.aggregator}' is not among the genotype's "
                                 f"aggregators ({', '.join(self.aggregators)})")

    def check_width(self, width: int, source: str = "genotype") -> None:
        """Every op and the aggregator must build at ``width`` (head counts, capsules, LSTM halves)."""
        from .errors import ConfigError
        from .space.aggregators import build_aggregator
        from .space.ops import build_op

        try:
            for c in range(len(self.cells)):
                for node in self.cell(c):
                    for op, _ in node:
                        build_op(op, width)
            if self.aggregator:
                build_aggregator(self.aggregator, width)
        except ConfigError as e:
            raise ConfigError(f"{source} cannot be built at width {width}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Genotype":
        """The genotype in the JSON file ``path`` (a genotype.json, or a file holding one under
        ``"genotype"``); :class:`NaskdError` naming the file when it is missing, not UTF-8 JSON, or not a
        valid genotype (see :meth:`from_dict`)."""
        return cls.from_dict(read_genotype_json(path), str(path))

    def describe(self) -> str:
        parts = []
        for c in range(len(self.cells)):
            nodes = "; ".join(f"n{i}=" + "+".join(f"{op}(x{j})" for op, j in node)
                              for i, node in enumerate(self.cell(c)))
            parts.append(nodes if len(self.cells) == 1 else f"cell{c}: {nodes}")
        return " | ".join(parts) + (f" -> {self.aggregator}" if self.aggregator else "")


def read_genotype_json(path: str | os.PathLike):
    """The JSON value a genotype file holds (its ``"genotype"`` entry when it holds one there), not yet
    checked; :class:`NaskdError` naming the file when it is a directory, missing or not UTF-8 JSON."""
    if Path(path).is_dir():
        raise NaskdError(f"genotype {path} is a directory; name its genotype file, e.g. "
                         f"{Path(path) / 'genotype.json'}")
    d = read_json(path, missing=f"genotype file {path} does not exist",
                  way_out="name the genotype.json `naskd search` wrote")
    if isinstance(d, dict) and isinstance(d.get("genotype"), dict):
        d = d["genotype"]
    return d


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _whole(v, what: str, low: int) -> int:
    """``v`` if it is a JSON integer >= ``low`` (not a boolean, not a fraction such as 1.5 or 2.0)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise NaskdError(f"{what} must be an integer >= {low}, got {v!r}")
    return v


def _select_cell(weights: torch.Tensor, ops: tuple, nodes: int, k: int, banned: set) -> list:
    """[(node, input, op, weight, edge index)] chosen: per node the top-k incoming edges ranked by their
    strongest op other than ``none`` (and other than the (edge, op) pairs in ``banned``), each with that op."""
    edges = edge_list(nodes)
    none_idx = ops.index("none") if "none" in ops else None
    chosen = []
    for i in range(nodes):
        cands = []
        for e, (node, j) in enumerate(edges):
            if node != i:
                continue
            w = weights[e].clone()
            if none_idx is not None:
                w[none_idx] = -1.0
            for b in (o for (be, o) in banned if be == e):
                w[b] = -1.0
            best = int(torch.argmax(w))
            cands.append((float(w[best]), j, ops[best], e))
        cands.sort(key=lambda t: (-t[0], t[1]))
        chosen += [(i, j, op, w, e) for w, j, op, e in cands[:k]]
    return chosen


def _parse_cell(weights: torch.Tensor, ops: tuple, nodes: int, k: int, max_identity: int | None = None) -> tuple:
    """weights (E, K) softmaxed. x0, x1 are the cell inputs; node i reads x_j for j < i + 2.

    ``max_identity`` caps the identity edges of the cell (P-DARTS, Chen et al. 2019: DARTS drifts towards
    parameter-free skips as it trains): while the cell has more, the weakest chosen identity is barred from
    its edge and the cell derived again, so that edge competes with its next-best op."""
    banned: set = set()
    ident = ops.index("identity") if "identity" in ops else None
    while True:
        chosen = _select_cell(weights, ops, nodes, k, banned)
        skips = [c for c in chosen if c[2] == "identity"]
        if max_identity is None or ident is None or len(skips) <= max_identity:
            break
        weakest = min(skips, key=lambda c: (c[3], -c[0], -c[1]))
        banned.add((weakest[4], ident))
    return tuple(tuple(sorted(((op, j) for n, j, op, _, _ in chosen if n == i), key=lambda t: t[1]))
                 for i in range(nodes))


def parse(op_alphas: torch.Tensor, agg_alphas: torch.Tensor | None, space, *, layers: int, width: int,
          k: int = 2, max_identity: int | None = None) -> Genotype:
    """Derive the genotype from raw alphas: (E, K) shared or (layers, E, K) per cell; (A,) aggregators.
    ``max_identity``: at most this many identity edges per cell (see :func:`_parse_cell`)."""
    if max_identity is not None and max_identity < 0:
        raise NaskdError(f"max_identity must be 0 or more, got {max_identity}")
    w = torch.softmax(op_alphas.detach().float().cpu(), dim=-1)
    ops = tuple(space.ops)
    if w.dim() == 2:
        cells = (_parse_cell(w, ops, space.nodes, k, max_identity),)
    else:
        cells = tuple(_parse_cell(w[c], ops, space.nodes, k, max_identity) for c in range(w.size(0)))
    agg = space.aggregators[int(torch.argmax(agg_alphas))] if agg_alphas is not None and len(agg_alphas) else None
    return Genotype(space.name, ops, tuple(space.aggregators), space.nodes, layers, width, cells, agg)


def sample_genotype(space, *, layers: int, width: int, rng, k: int = 2) -> Genotype:
    """A genotype drawn uniformly from what :func:`parse` can derive: each node reads k distinct inputs
    (uniform among those it may read), each edge an op uniform among the space's ops other than
    ``none``; the aggregator uniform. ``rng`` is a ``numpy.random.Generator``. The control any NAS
    result must beat (Li & Talwalkar 2019)."""
    ops = [o for o in space.ops if o != "none"]
    cell = []
    for i in range(space.nodes):
        inputs = rng.choice(i + 2, size=min(k, i + 2), replace=False)
        cell.append(tuple(sorted(((ops[int(rng.integers(len(ops)))], int(j)) for j in inputs),
                                 key=lambda t: t[1])))
    agg = space.aggregators[int(rng.integers(len(space.aggregators)))] if space.aggregators else None
    return Genotype(space.name, tuple(space.ops), tuple(space.aggregators), space.nodes, layers, width,
                    (tuple(cell),), agg)


def parameter_free_share(g: Genotype) -> float:
    """Fraction of chosen edges whose op has no weights (identity, pooling)."""
    from .space.ops import is_parameter_free

    edges = [op for c in range(len(g.cells)) for node in g.cell(c) for op, _ in node]
    return sum(is_parameter_free(op) for op in edges) / max(1, len(edges))


def edge_overlap(a: Genotype, b: Genotype) -> float:
    """Jaccard overlap of (node, input, op) edges, averaged over cells."""
    n = max(len(a.cells), len(b.cells))
    vals = []
    for c in range(n):
        ea, eb = a.edges(min(c, len(a.cells) - 1)), b.edges(min(c, len(b.cells) - 1))
        vals.append(len(ea & eb) / max(1, len(ea | eb)))
    return sum(vals) / len(vals)
