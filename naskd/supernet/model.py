"""The DARTS supernet: every edge a softmax-weighted mixture of the space's ops.

Architecture parameters live in ``self.arch`` (``ops``: (E, K) shared by all cells, or (layers, E, K)
per cell; ``agg``: (A,)), apart from the weights: :meth:`alphas` and :meth:`weights` feed two optimisers.
The model never picks a device.

One-shot (SPOS) use: ``forward(..., path=genotype)`` runs the single path of a genotype (each node sums
only its chosen edges, each through that edge's module of the chosen op; the chosen aggregator), without
the alphas; :meth:`Supernet.student` is the :class:`~naskd.students.fixed.FixedStudent` of that path with
the inherited weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ..crf import CRF
from ..data.tasks import TAGGING
from ..network import CellBase, Embeddings, Head, cell_network_forward, edge_list
from ..space.aggregators import build_aggregator
from ..space.ops import build_op
from ..space.spec import SearchSpace


class MixedOp(nn.Module):
    """sum_k w_k m_k(x, mask) over the modules ``build(name, width)`` of ``names`` (an edge's ops, or the
    aggregators of the pooling step); ``none`` contributes nothing and is not run (DARTS' mixed op, Liu et al.
    2019, eq. 2)."""

    def __init__(self, names, width: int, build=build_op):
        super().__init__()
        self.names = list(names)
        self.ops = nn.ModuleList(build(n, width) for n in self.names)

    def forward(self, x, mask, weights):
        out = 0.0
        for w, name, op in zip(weights, self.names, self.ops):
            if name != "none":
                out = out + w * op(x, mask)
        return out if torch.is_tensor(out) else torch.zeros_like(x)


class SearchCell(CellBase):
    def __init__(self, space: SearchSpace, width: int, dropout: float = 0.1):
        super().__init__(width, space.nodes, dropout)
        self.edges = edge_list(space.nodes)
        self.edge_index = {e: k for k, e in enumerate(self.edges)}
        self.op_index = {name: k for k, name in enumerate(space.ops)}
        self.mixed = nn.ModuleList(MixedOp(space.ops, width) for _ in self.edges)

    def edge_op(self, i: int, j: int, op: str) -> nn.Module:
        """The module of op ``op`` on the edge from input ``j`` to node ``i``."""
        return self.mixed[self.edge_index[(i, j)]].ops[self.op_index[op]]

    def node(self, i, states, mask, weights):
        if isinstance(weights, tuple):       # a single path: a genotype's cell, ((op, input), ...) per node
            return sum(self.edge_op(i, j, op)(states[j], mask) for op, j in weights[i])
        total = 0.0
        for k, (node, j) in enumerate(self.edges):
            if node == i:
                total = total + self.mixed[k](states[j], mask, weights[k])
        return total


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, *, layers: int, width: int, kind: str, num_labels: int,
                 vocab_size: int, max_positions: int = 512, per_cell_alphas: bool = False,
                 dropout: float = 0.1, alpha_init: float = 1e-3, seed: int = 0):
        super().__init__()
        space.check(width)
        self.space, self.layers, self.width, self.kind = space, layers, width, kind
        self.num_labels, self.vocab_size, self.max_positions = num_labels, vocab_size, max_positions
        self.dropout = dropout
        self.embeddings = Embeddings(vocab_size, width, max_positions, dropout=dropout)
        self.cells = nn.ModuleList(SearchCell(space, width, dropout) for _ in range(layers))
        self.aggregate = None if kind == TAGGING else MixedOp(space.aggregators, width, build_aggregator)
        self.final_norm = nn.LayerNorm(width)          # the cells are pre-LN: normalise before the head
        self.head = Head(kind, width, num_labels, dropout)
        self.crf = CRF(num_labels) if kind == TAGGING else None   # tagging: emissions into a CRF
        n_edges, n_ops = len(edge_list(space.nodes)), len(space.ops)
        g = torch.Generator().manual_seed(seed)
        shape = (layers, n_edges, n_ops) if per_cell_alphas else (n_edges, n_ops)
        self.arch = nn.ParameterDict({
            "ops": nn.Parameter(alpha_init * torch.randn(*shape, generator=g)),
            # taggers have no aggregation layer: an empty vector keeps the parameter layout uniform
            "agg": nn.Parameter(alpha_init * torch.randn(0 if kind == TAGGING else len(space.aggregators),
                                                         generator=g)),
        })
        self.per_cell_alphas = per_cell_alphas

    def alphas(self):
        return list(self.arch.parameters())

    def weights(self):
        arch = {id(p) for p in self.arch.parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> torch.Tensor:
        return torch.softmax(self.arch["ops"], dim=-1)

    def agg_weights(self) -> torch.Tensor:
        return torch.softmax(self.arch["agg"], dim=-1)

    def forward(self, input_ids, attention_mask, token_type_ids=None, word_starts=None, word_mask=None,
                path=None, **_):
        """input_ids, attention_mask, token_type_ids (B, L); word_starts, word_mask (B, W) for tagging.
        ``path`` None: every edge the softmax(alpha)-weighted mixture of its ops (DARTS). ``path`` a
        :class:`~naskd.genotype.Genotype` of this supernet (see :meth:`check_path`, ValueError otherwise):
        only its chosen edges and aggregator run, unweighted, as in its :meth:`student`.
        Returns ``logits`` (B, C), (B,) for regression or (B, W, T) emissions for tagging, ``states``
        (layers + 1) x (B, L, D), ``mask`` (B, L) bool (tagging: also ``word_mask`` and ``crf``)."""
        if path is not None:
            self.check_path(path)
            return cell_network_forward(
                self, input_ids, attention_mask, token_type_ids, word_starts, word_mask,
                run_cell=lambda c, cell, s0, s1, tok: cell(s0, s1, tok, path.cell(c)),
                pool=lambda h, tok: self.aggregate.ops[self.aggregate.names.index(path.aggregator)](h, tok))
        w_ops = self.op_weights()
        return cell_network_forward(
            self, input_ids, attention_mask, token_type_ids, word_starts, word_mask,
            run_cell=lambda c, cell, s0, s1, tok: cell(s0, s1, tok, w_ops[c] if self.per_cell_alphas else w_ops),
            pool=lambda h, tok: self.aggregate(h, tok, self.agg_weights()))

    def check_path(self, g) -> None:
        """Raise ValueError unless the genotype ``g`` is a path of this supernet: the same nodes, layers and
        width, one shared cell or one per layer, each edge an op of the space other than ``none`` reading an
        input 0..node+1 (at most once per node), the aggregator one of the space's (sentence tasks)."""
        if (g.nodes, g.layers, g.width) != (self.space.nodes, self.layers, self.width):
            raise ValueError(f"genotype of {g.nodes} nodes, {g.layers} layers, width {g.width} is not a path of a "
                             f"supernet of {self.space.nodes} nodes, {self.layers} layers, width {self.width}")
        if len(g.cells) not in (1, self.layers):
            raise ValueError(f"{len(g.cells)} cell descriptions for {self.layers} layers")
        ops = set(self.space.ops) - {"none"}
        for c in range(len(g.cells)):
            cell = g.cell(c)
            if len(cell) != self.space.nodes:
                raise ValueError(f"cell {c} has {len(cell)} nodes, the supernet {self.space.nodes}")
            for i, node in enumerate(cell):
                inputs = [j for _, j in node]
                if not node or len(set(inputs)) != len(inputs):
                    raise ValueError(f"cell {c} node {i}: needs at least one edge and distinct inputs, got {node}")
                for op, j in node:
                    if op not in ops:
                        raise ValueError(f"cell {c} node {i}: op {op!r} is not one of the supernet's "
                                         f"({', '.join(sorted(ops))})")
                    if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < i + 2:
                        raise ValueError(f"cell {c} node {i} cannot read input {j!r} (valid: 0..{i + 1})")
        if self.kind != TAGGING and g.aggregator not in self.space.aggregators:
            raise ValueError(f"aggregator {g.aggregator!r} is not one of the supernet's "
                             f"({', '.join(self.space.aggregators)})")

    @torch.no_grad()
    def student(self, g):
        """The standalone :class:`~naskd.students.fixed.FixedStudent` of the path ``g`` (see
        :meth:`check_path`), its weights copied from this supernet's: embeddings, each cell's norms and
        linear maps, each chosen edge's op module, the chosen aggregator, the final norm, head and CRF.
        In eval mode its outputs equal ``self(path=g, ...)``'s. It is in training mode and on the
        supernet's device and dtype; it shares no tensor with the supernet."""
        from ..students.fixed import FixedStudent

        self.check_path(g)
        p = next(self.parameters())
        st = FixedStudent(g, kind=self.kind, num_labels=self.num_labels, vocab_size=self.vocab_size,
                          max_positions=self.max_positions, width=self.width, dropout=self.dropout)
        st.to(device=p.device, dtype=p.dtype)
        pairs = [(st.embeddings, self.embeddings), (st.final_norm, self.final_norm), (st.head, self.head)]
        if self.crf is not None:
            pairs.append((st.crf, self.crf))
        if self.aggregate is not None:
            pairs.append((st.aggregate, self.aggregate.ops[self.aggregate.names.index(g.aggregator)]))
        for c, (fixed, cell) in enumerate(zip(st.cells, self.cells)):
            for name in ("norm0", "norm1", "pre0", "pre1", "out"):
                pairs.append((getattr(fixed, name), getattr(cell, name)))
            for i, node in enumerate(g.cell(c)):
                for e, (op, j) in enumerate(node):
                    pairs.append((fixed.ops[i][e], cell.edge_op(i, j, op)))
        for dst, src in pairs:
            dst.load_state_dict(src.state_dict(), strict=True)
        return st

    def alpha_entropy(self) -> float:
        """Mean entropy (nats) of the edges' op distributions: log K at the start, 0 when decided."""
        with torch.no_grad():
            p = self.op_weights()
            return float(-(p * torch.log(p + 1e-12)).sum(-1).mean())
