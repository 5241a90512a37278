"""The fixed student rebuilt from a genotype, through the same op table and cell skeleton as the
supernet: each node sums its chosen ops, the aggregator is the chosen one."""
from __future__ import annotations

from torch import nn

from ..crf import CRF
from ..data.tasks import TAGGING
from ..genotype import Genotype
from ..network import CellBase, Embeddings, Head, cell_network_forward
from ..space.aggregators import build_aggregator
from ..space.ops import build_op


class FixedCell(CellBase):
    def __init__(self, cell: tuple, width: int, dropout: float = 0.1):
        super().__init__(width, len(cell), dropout)
        self.spec = cell
        self.ops = nn.ModuleList(nn.ModuleList(build_op(op, width) for op, _ in node) for node in cell)

    def node(self, i, states, mask, weights):
        return sum(op(states[j], mask) for op, (_, j) in zip(self.ops[i], self.spec[i]))


class FixedStudent(nn.Module):
    def __init__(self, genotype: Genotype, *, kind: str, num_labels: int, vocab_size: int,
                 max_positions: int = 512, width: int | None = None, dropout: float = 0.1,
                 embed_width: int | None = None):
        super().__init__()
        width = width or genotype.width
        self.genotype, self.kind, self.width, self.num_labels = genotype, kind, width, num_labels
        self.layers = genotype.layers
        self.embeddings = Embeddings(vocab_size, width, max_positions, dropout=dropout, embed_width=embed_width)
        self.cells = nn.ModuleList(FixedCell(genotype.cell(c), width, dropout) for c in range(genotype.layers))
        if kind != TAGGING and not genotype.aggregator:
            raise ValueError("a sentence-level student needs an aggregator in its genotype")
        self.aggregate = None if kind == TAGGING else build_aggregator(genotype.aggregator, width)
        self.final_norm = nn.LayerNorm(width)          # the cells are pre-LN: normalise before the head
        self.head = Head(kind, width, num_labels, dropout)
        self.crf = CRF(num_labels) if kind == TAGGING else None   # tagging: emissions into a CRF

    def forward(self, input_ids, attention_mask, token_type_ids=None, word_starts=None, word_mask=None, **_):
        """A :class:`naskd.records.ModelOutput` (see :func:`naskd.network.cell_network_forward`)."""
        return cell_network_forward(self, input_ids, attention_mask, token_type_ids, word_starts, word_mask,
                                    run_cell=lambda c, cell, s0, s1, tok: cell(s0, s1, tok), pool=self.aggregate)
