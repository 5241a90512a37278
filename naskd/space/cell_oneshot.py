"""The DARTS cell spaces (``search_spaces/nas_kd.yaml``, ``adabert.yaml``: no ``kind:`` key) as one-shot
spaces: one cell shared by ``layers`` cells, each of its nodes reading k = 2 distinct inputs (DARTS'
derivation), each through an op other than ``none``; one aggregator.

Dimensions, per node i (0-based): ``n{i}_inputs``, the unordered pair of distinct inputs among 0..i+1
(``"0,1"``, ``"0,2"``, ...; inputs 0 and 1 are the cell's inputs, i + 2 is node i); ``n{i}_op0``, the op
on the smaller input; ``n{i}_op1``, the op on the larger; then ``aggregator``. Every genotype uses every
dimension, and distinct choices make distinct genotypes, so the space has exactly the product of the
option counts, and :meth:`CellSpace.sample` is uniform over what :func:`naskd.genotype.sample_genotype`
draws.

Genotypes are :class:`naskd.genotype.Genotype` (no ``"kind"``: cell). The supernet is the DARTS
:class:`naskd.supernet.model.Supernet`, trained one path at a time (its alphas frozen).

Latency parts (keys; D the width): ``cell:embed:D`` (``cell:embed:D:pair`` with segment embeddings), an
input part: the embeddings and the padding mask; ``cell:cell:D:N``, counted ``layers`` times: a cell's
fixed work with N nodes (two LayerNorms and linear maps on its inputs, one sum per node, the output
linear map of the concatenated nodes, the residual sum, the padding mask); ``cell:edge:OP:D``, counted
once per chosen edge with op OP over all cells; ``cell:agg:AGG:D`` (sentence tasks); ``cell:head:KIND:D:C``:
the final LayerNorm and the task head (C labels).
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from math import comb
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.tasks import TAGGING
from ..errors import ConfigError, NaskdError
from ..genotype import Genotype
from ..network import CellBase
from .oneshot import BuildContext, OneShotSpace, Part, register_space_kind
from .spec import SearchSpace

K_INPUTS = 2            # inputs per node (DARTS)
DEFAULT_LAYERS = 6


@register_space_kind
class CellSpace(OneShotSpace):
    """A DARTS cell :class:`SearchSpace` stacked ``layers`` times (one shared cell), searched one-shot.

    ``CellSpace(space, layers=6)``; ConfigError from :meth:`check` when ``layers`` < 1 or an op or
    aggregator cannot be built at the space's width."""

    kind = "cell"
    genotype_class = Genotype

    def __init__(self, space: SearchSpace, layers: int = DEFAULT_LAYERS):
        self.space = space
        self.layers = layers
        self.name = space.name
        self.source = space.source
        self.description = space.description

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, data: dict, source: str, ctx: BuildContext | None = None) -> CellSpace:
        """The space a DARTS cell file declares (``name``, ``description``, ``ops``, ``aggregators``,
        ``nodes``, ``width``; optionally ``layers``, default 6). ConfigError naming ``source`` when it is
        malformed or cannot build. ``ctx`` is not needed."""
        data = {k: v for k, v in data.items() if k != "kind"}
        layers = data.pop("layers", DEFAULT_LAYERS)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"{source}: 'layers' must be an integer >= 1, got {layers!r}")
        space = SearchSpace.from_dict(data, source, default_name=Path(source).stem)
        out = cls(space, layers)
        out.check()
        return out

    def with_layers(self, layers: int) -> CellSpace:
        """The same cell stacked ``layers`` times (the search command's ``--layers``); checked."""
        out = CellSpace(self.space, layers)
        out.check()
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.space.to_dict(), "layers": self.layers}

    # --- the discrete space -------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.space.width

    @property
    def nodes(self) -> int:
        return self.space.nodes

    @property
    def ops(self) -> tuple:
        """The ops an edge can take: the space's other than ``none``."""
        return tuple(o for o in self.space.ops if o != "none")

    @staticmethod
    def input_pairs(i: int) -> tuple:
        """The options of node i's inputs: ``"j0,j1"`` for 0 <= j0 < j1 <= i + 1."""
        return tuple(f"{a},{b}" for a, b in combinations(range(i + 2), K_INPUTS))

    def dimensions(self) -> dict[str, tuple]:
        dims: dict[str, tuple] = {}
        for i in range(self.nodes):
            dims[f"n{i}_inputs"] = self.input_pairs(i)
            dims[f"n{i}_op0"] = self.ops
            dims[f"n{i}_op1"] = self.ops
        dims["aggregator"] = tuple(self.space.aggregators)
        return dims

    def from_choices(self, choices: Mapping[str, Any]) -> Genotype:
        """The genotype of one option per dimension; ConfigError naming a missing or unknown value."""
        cell = []
        for name, options in self.dimensions().items():
            if name not in choices:
                raise ConfigError(f"search space {self.name}: no choice for '{name}'")
            if choices[name] not in options:
                raise ConfigError(f"search space {self.name}: '{name}' cannot be {choices[name]!r}; options: "
                                  f"{', '.join(map(str, options))}")
        for i in range(self.nodes):
            a, b = (int(x) for x in choices[f"n{i}_inputs"].split(","))
            cell.append(((choices[f"n{i}_op0"], a), (choices[f"n{i}_op1"], b)))
        return Genotype(self.name, tuple(self.space.ops), tuple(self.space.aggregators), self.nodes,
                        self.layers, self.width, (tuple(cell),), choices["aggregator"])

    def choices_of(self, genotype: Genotype) -> dict:
        """The choices of a genotype of this space (ConfigError when it is not one, see :meth:`contains`)."""
        if not self.contains(genotype):
            raise ConfigError(f"genotype {genotype.describe() if isinstance(genotype, Genotype) else genotype!r} "
                              f"is not in search space {self.name} ({self.layers} layers, width {self.width})")
        out: dict = {}
        for i, node in enumerate(genotype.cell(0)):
            (op0, a), (op1, b) = sorted(node, key=lambda t: t[1])
            out.update({f"n{i}_inputs": f"{a},{b}", f"n{i}_op0": op0, f"n{i}_op1": op1})
        out["aggregator"] = genotype.aggregator
        return out

    def size(self) -> int:
        """Exactly the number of distinct genotypes: prod_i C(i + 2, 2) * |ops|^2, times |aggregators|."""
        n = len(self.space.aggregators)
        for i in range(self.nodes):
            n *= comb(i + 2, K_INPUTS) * len(self.ops) ** K_INPUTS
        return n

    def sample(self, rng: np.random.Generator) -> Genotype:
        """Uniform over the space (each dimension uniformly; ``rng`` a numpy Generator)."""
        return super().sample(rng)

    def check(self) -> None:
        """ConfigError naming the space file when ``layers`` < 1 or some op or aggregator cannot build at
        the space's width (see :meth:`SearchSpace.check`)."""
        where = self.source or self.name
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1:
            raise ConfigError(f"{where}: layers must be an integer >= 1, got {self.layers!r}")
        try:
            self.space.check()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def contains(self, genotype) -> bool:
        """True when ``genotype`` is a :class:`Genotype` of this space's nodes, layers and width with one
        shared cell, each node two edges from distinct valid inputs, each op one of the space's other
        than ``none``, and one of the space's aggregators. (The space's name and the genotype's recorded
        op lists are labels, not compared.)"""
        g = genotype
        if not isinstance(g, Genotype) or (g.nodes, g.layers, g.width) != (self.nodes, self.layers, self.width):
            return False
        if len(g.cells) != 1 or len(g.cells[0]) != self.nodes or g.aggregator not in self.space.aggregators:
            return False
        for i, node in enumerate(g.cells[0]):
            inputs = {j for _, j in node}
            if len(node) != K_INPUTS or len(inputs) != K_INPUTS:
                return False
            for op, j in node:
                if op not in self.ops or isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < i + 2:
                    return False
        return True

    # --- genotypes ----------------------------------------------------------------------------
    def genotype_from_dict(self, d: dict, source: str = "genotype") -> Genotype:
        """A cell genotype from JSON (:meth:`Genotype.from_dict`); NaskdError naming ``source`` when it is
        malformed or of another kind. It need not be in this space (see :meth:`contains`)."""
        if isinstance(d, dict) and d.get("kind", "cell") != "cell":
            raise NaskdError(f"{source} is not a valid genotype: it is of kind {d['kind']!r}, "
                             f"search space {self.name} is of kind 'cell'")
        return Genotype.from_dict(d, source)

    # --- models -------------------------------------------------------------------------------
    def supernet(self, ctx: BuildContext):
        """The DARTS :class:`~naskd.supernet.model.Supernet` of ``layers`` cells at the space's width,
        initialised from ``ctx.seed`` (the global RNG is left as it was), its alphas frozen
        (``requires_grad`` False: one-shot training never updates them), its embeddings from
        ``ctx.teacher_dir`` when given. ``net(path=g, ...)`` runs genotype g's path; ``net.student(g)`` is
        its standalone student."""
        from ..supernet.model import Supernet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            net = Supernet(self.space, layers=self.layers, width=self.width, kind=ctx.kind,
                           num_labels=ctx.num_labels, vocab_size=ctx.vocab_size, max_positions=ctx.max_positions,
                           dropout=ctx.dropout, seed=ctx.seed)
        net.arch.requires_grad_(False)
        if ctx.teacher_dir is not None:
            net.embedding_note = _init_embeddings(net.embeddings, ctx)
        return net

    def build_student(self, genotype: Genotype, ctx: BuildContext):
        """A fresh :class:`~naskd.students.fixed.FixedStudent` of ``genotype`` at its width, initialised from
        ``ctx.seed`` (the global RNG is left as it was), its embeddings from ``ctx.teacher_dir`` when given
        (as `naskd retrain` builds it). NaskdError when the genotype is not a valid one."""
        from ..students.fixed import FixedStudent

        if not isinstance(genotype, Genotype):
            raise NaskdError(f"search space {self.name} builds cell genotypes, not {type(genotype).__name__}")
        genotype.check()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            model = FixedStudent(genotype, kind=ctx.kind, num_labels=ctx.num_labels, vocab_size=ctx.vocab_size,
                                 max_positions=ctx.max_positions, width=genotype.width, dropout=ctx.dropout)
        if ctx.teacher_dir is not None:
            model.embedding_note = _init_embeddings(model.embeddings, ctx)
        return model

    def fixed_shape(self, genotype=None) -> tuple[int, int]:
        """(layers, width): every student of the space has them."""
        return self.layers, self.width

    # --- latency ------------------------------------------------------------------------------
    def latency_parts(self, genotype: Genotype, ctx: BuildContext) -> list[Part]:
        """The embeddings, ``layers`` cells' fixed work, each chosen edge (over all cells, counted per op),
        the aggregator (sentence tasks) and the head: together the whole forward of the student."""
        w = genotype.width
        parts = [Part(f"cell:embed:{w}" + (":pair" if ctx.pair else "")),
                 Part(f"cell:cell:{w}:{genotype.nodes}", genotype.layers)]
        edges: dict[str, int] = {}
        for c in range(genotype.layers):
            for node in genotype.cell(c):
                for op, _ in node:
                    edges[op] = edges.get(op, 0) + 1
        parts += [Part(f"cell:edge:{op}:{w}", n) for op, n in edges.items()]
        if ctx.kind != TAGGING:
            parts.append(Part(f"cell:agg:{genotype.aggregator}:{w}"))
        parts.append(Part(f"cell:head:{ctx.kind}:{w}:{ctx.num_labels}"))
        return parts

    def part_module(self, key: str, ctx: BuildContext):
        """``(module, input_width)`` for a part key of :meth:`latency_parts` (the module in eval mode, on
        the CPU): ``cell:embed`` takes ``(input_ids, attention_mask)`` (input width 0), the others
        ``(x, mask)`` with x (B, L, D) float and mask (B, L) bool. ConfigError for a key of another form."""
        from ..space.aggregators import build_aggregator
        from ..space.ops import build_op

        f = key.split(":")
        try:
            if f[0] != "cell":
                raise ValueError
            if f[1] == "embed" and len(f) in (3, 4) and (len(f) == 3 or f[3] == "pair"):
                return _EmbedPart(ctx.vocab_size, int(f[2]), ctx.max_positions, len(f) == 4).eval(), 0
            if f[1] == "cell" and len(f) == 4:
                return _CellPart(int(f[2]), int(f[3])).eval(), int(f[2])
            if f[1] == "edge" and len(f) == 4:
                return _OpPart(build_op(f[2], int(f[3]))).eval(), int(f[3])
            if f[1] == "agg" and len(f) == 4:
                return _OpPart(build_aggregator(f[2], int(f[3]))).eval(), int(f[3])
            if f[1] == "head" and len(f) == 5:
                return _HeadPart(f[2], int(f[3]), int(f[4])).eval(), int(f[3])
        except (ValueError, IndexError):
            pass
        raise ConfigError(f"'{key}' is not a latency part of a cell space (cell:embed:D[:pair], cell:cell:D:N, "
                          "cell:edge:OP:D, cell:agg:AGG:D, cell:head:KIND:D:C)")


def _init_embeddings(embeddings, ctx: BuildContext) -> str:
    from ..network import teacher_embedding_tables

    return embeddings.init_from_teacher(teacher_embedding_tables(ctx.teacher_dir))


class _EmbedPart(nn.Module):
    """The students' input work: embeddings (segments too for pair tasks), the padding mask."""

    def __init__(self, vocab_size: int, width: int, max_positions: int, pair: bool):
        super().__init__()
        from ..network import Embeddings

        self.embeddings = Embeddings(vocab_size, width, max_positions)
        self.pair = pair

    def forward(self, input_ids, attention_mask):
        from ..space.ops import Tokens, zero_padding

        tok = Tokens(attention_mask.bool())
        segments = torch.zeros_like(input_ids) if self.pair else None
        return zero_padding(self.embeddings(input_ids, segments), tok)


class _CellPart(CellBase):
    """A cell's work outside its edges: what :class:`naskd.network.CellBase` does, with each node's two
    edge outputs replaced by the preprocessed inputs (their sum, the node's one addition, is kept)."""

    def node(self, i, states, mask, weights):
        return states[0] + states[1]

    def forward(self, x, mask):
        return super().forward(x, x, mask)


class _OpPart(nn.Module):
    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op

    def forward(self, x, mask):
        return self.op(x, mask)


class _HeadPart(nn.Module):
    """The final LayerNorm, the padding mask and the head (sentence tasks: of a pooled vector, here the
    first token's state; tagging: of every token as a word start)."""

    def __init__(self, kind: str, width: int, num_labels: int):
        super().__init__()
        from ..network import Head

        self.kind = kind
        self.norm = nn.LayerNorm(width)
        self.head = Head(kind, width, num_labels)

    def forward(self, x, mask):
        from ..space.ops import zero_padding

        s = zero_padding(self.norm(x), mask)
        if self.kind == TAGGING:
            starts = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)
            return self.head(states=s, word_starts=starts)
        return self.head(pooled=s[:, 0])
