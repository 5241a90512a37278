"""The DARTS supernet: every edge a softmax-weighted mixture of the space's ops.

Architecture parameters live in ``self.arch`` (``ops``: (E, K) shared by all cells, or (layers, E, K)
per cell; ``agg``: (A,)), apart from the weights: :meth:`alphas` and :meth:`weights` feed two optimisers.
The model never picks a device.
"""
from __future__ import annotations

import torch
from torch import nn

from ..crf import CRF
from ..data.tasks import TAGGING
from ..network import CellBase, Embeddings, Head, MixedAggregator, edge_list
from ..space.ops import Tokens, build_op, zero_padding
from ..space.spec import SearchSpace


class MixedOp(nn.Module):
    """sum_k w_k op_k(x, mask); ``none`` contributes nothing and is not run."""

    def __init__(self, ops, width: int):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(build_op(n, width) for n in self.names)

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
        self.mixed = nn.ModuleList(MixedOp(space.ops, width) for _ in self.edges)

    def node(self, i, states, mask, weights):
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
        self.embeddings = Embeddings(vocab_size, width, max_positions, dropout=dropout)
        self.cells = nn.ModuleList(SearchCell(space, width, dropout) for _ in range(layers))
        self.aggregate = None if kind == TAGGING else MixedAggregator(space.aggregators, width)
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

    def forward(self, input_ids, attention_mask, token_type_ids=None, word_starts=None, word_mask=None, **_):
        mask = attention_mask.bool()
        tok = Tokens(mask)                   # what the ops derive from the mask, built once for all of them
        emb = zero_padding(self.embeddings(input_ids, token_type_ids), tok)
        w_ops = self.op_weights()
        states = [emb]
        s0 = s1 = emb
        for c, cell in enumerate(self.cells):
            w = w_ops[c] if self.per_cell_alphas else w_ops
            s0, s1 = s1, cell(s0, s1, tok, w)
            states.append(s1)
        s1 = zero_padding(self.final_norm(s1), tok)
        if self.kind == TAGGING:
            logits = self.head(states=s1, word_starts=word_starts)
        else:
            logits = self.head(pooled=self.aggregate(s1, tok, self.agg_weights()))
        out = {"logits": logits, "states": states, "mask": mask}
        if self.kind == TAGGING:
            out["word_mask"] = word_mask if word_mask is not None else word_starts.new_ones(word_starts.shape).bool()
            out["crf"] = self.crf
        return out

    def alpha_entropy(self) -> float:
        """Mean entropy (nats) of the edges' op distributions: log K at the start, 0 when decided."""
        with torch.no_grad():
            p = self.op_weights()
            return float(-(p * torch.log(p + 1e-12)).sum(-1).mean())
