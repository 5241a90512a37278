"""The macro space's weight-sharing supernet: every genotype's weights by width slicing (HAT, Wang et al.
2020; AutoTinyBERT).

One word-embedding table at the largest embed width (a narrower embed reads its first columns); for each
layer position and op one module at the largest input and output widths, a path's layer using the leading
slices of its weights:

* lstm (``w/2`` units per direction): the first ``w/2`` rows of each gate's block of the input and
  recurrent weights and biases, the first ``w_in`` input columns, the first ``w/2`` recurrent columns;
* conv / dwconv: the first output and input channels (depthwise: the first input channels);
* attn: the first rows and columns of the input map; of the q, k and v blocks of the qkv map, each
  block's first ``w`` rows and columns, the heads regrouped at width ``w`` (``w/h`` wide each); the output
  projection's leading ``w x w``;
* LayerNorms: the first ``w`` units;
* the head: the first ``C`` units of the ReLU layer, its columns the first ``w`` of each feature block
  (one block, four for pairs); the classifier's first ``C`` columns.

``net(input_ids, attention_mask, token_type_ids, path=g)`` runs ``g``'s path; ``net.student(g)`` is the
:class:`naskd.students.macro.MacroStudent` holding copies of those slices, equal to the path in eval mode.
Gradients of a path reach only the slices it reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tasks import TAGGING
from ..errors import ConfigError
from ..space.ops import BiLSTM, Tokens, reverse_within_length, zero_padding
from ..students.macro import (
    MacroAttention,
    MacroConv,
    MacroStudent,
    attention_apply,
    conv_apply,
    macro_forward,
    pair_features,
    layer_of,
)


def _gate_rows(t: torch.Tensor, hidden: int) -> torch.Tensor:
    """The first ``hidden`` rows of each of the 4 gate blocks of an LSTM weight or bias (4H, ...)."""
    H = t.size(0) // 4
    return t.view(4, H, *t.shape[1:])[:, :hidden].reshape(4 * hidden, *t.shape[1:])


class SlicedLSTM(BiLSTM):
    """A BiLSTM at the largest widths, run at any (in, out) slice."""

    def sliced_weights(self, lstm: nn.LSTM, in_w: int, hidden: int) -> list[torch.Tensor]:
        return [_gate_rows(lstm.weight_ih_l0, hidden)[:, :in_w], _gate_rows(lstm.weight_hh_l0, hidden)[:, :hidden],
                _gate_rows(lstm.bias_ih_l0, hidden), _gate_rows(lstm.bias_hh_l0, hidden)]

    def run(self, x, tok: Tokens, in_w: int, out_w: int):
        hidden = out_w // 2
        index = tok.reverse_index()
        h0 = x.new_zeros(1, x.size(0), hidden)
        outs = []
        for lstm, inp in ((self.fwd, x), (self.bwd, reverse_within_length(x, index))):
            y = torch.lstm(inp, (h0, h0), self.sliced_weights(lstm, in_w, hidden), True, 1, 0.0, self.training,
                           False, True)[0]
            outs.append(y)
        return zero_padding(torch.cat([outs[0], reverse_within_length(outs[1], index)], -1), tok)

    def sliced_state(self, in_w: int, out_w: int) -> dict:
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        return {f"{d}.{n}": t for d in ("fwd", "bwd")
                for n, t in zip(names, self.sliced_weights(getattr(self, d), in_w, out_w // 2))}


class SlicedConv(MacroConv):
    def _weights(self, in_w: int, out_w: int):
        if self.depthwise is None:
            return {"conv.weight": self.conv.weight[:out_w, :in_w], "conv.bias": self.conv.bias[:out_w],
                    "norm.weight": self.norm.weight[:out_w], "norm.bias": self.norm.bias[:out_w]}
        return {"depthwise.weight": self.depthwise.weight[:in_w], "conv.weight": self.conv.weight[:out_w, :in_w],
                "conv.bias": self.conv.bias[:out_w], "norm.weight": self.norm.weight[:out_w],
                "norm.bias": self.norm.bias[:out_w]}

    def run(self, x, tok: Tokens, in_w: int, out_w: int):
        w = self._weights(in_w, out_w)
        return conv_apply(x, tok, self.kernel, out_w, w["conv.weight"], w["conv.bias"], w["norm.weight"],
                          w["norm.bias"], w.get("depthwise.weight"))

    def sliced_state(self, in_w: int, out_w: int) -> dict:
        return self._weights(in_w, out_w)


class SlicedAttention(MacroAttention):
    def _weights(self, in_w: int, out_w: int):
        W = self.proj.weight.size(0)
        qkv_w = self.qkv.weight.view(3, W, W)[:, :out_w, :out_w].reshape(3 * out_w, out_w)
        qkv_b = self.qkv.bias.view(3, W)[:, :out_w].reshape(3 * out_w)
        return {"inp.weight": self.inp.weight[:out_w, :in_w], "inp.bias": self.inp.bias[:out_w],
                "qkv.weight": qkv_w, "qkv.bias": qkv_b, "proj.weight": self.proj.weight[:out_w, :out_w],
                "proj.bias": self.proj.bias[:out_w], "norm.weight": self.norm.weight[:out_w],
                "norm.bias": self.norm.bias[:out_w]}

    def run(self, x, tok: Tokens, in_w: int, out_w: int):
        w = self._weights(in_w, out_w)
        return attention_apply(x, tok, self.heads, out_w, w["inp.weight"], w["inp.bias"], w["qkv.weight"],
                               w["qkv.bias"], w["proj.weight"], w["proj.bias"], w["norm.weight"], w["norm.bias"])

    def sliced_state(self, in_w: int, out_w: int) -> dict:
        return self._weights(in_w, out_w)


def _sliced_layer(op: str, in_width: int, width: int) -> nn.Module:
    """The shared module of ``op`` at the largest widths (``in_width`` -> ``width``)."""
    return layer_of(op, in_width, width, SlicedLSTM, SlicedConv, SlicedAttention)


class MacroSupernet(nn.Module):
    """All genotypes of a :class:`naskd.space.macro.MacroSpace` for one task.

    ``forward(input_ids, attention_mask, token_type_ids=None, *, path)`` ((B, L) ints, ``path`` a
    MacroGenotype of the space) returns the dict of :class:`MacroStudent`. ConfigError for a path outside
    the space or a tagging task."""

    def __init__(self, space, *, vocab_size: int, kind: str, num_labels: int, pair: bool, dropout: float = 0.1):
        super().__init__()
        if kind == TAGGING:
            raise ConfigError("the macro space is for sentence tasks (single, pair, regression), not tagging; "
                              "use nas_kd or teacher")
        self.space = space
        self.kind, self.pair, self.num_labels, self.dropout_p = kind, pair, num_labels, dropout
        E, W, C = max(space.embed), max(space.widths), max(space.classifier)
        self.max_width = W
        self.word = nn.Embedding(vocab_size, E, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.ModuleDict({op: _sliced_layer(op, E if i == 0 else W, W) for op in space.ops})
            for i in range(space.max_depth))
        self.relu = nn.Sequential(nn.Linear(pair_features(W, pair), C), nn.ReLU())
        self.out = nn.Linear(C, num_labels)

    @torch.no_grad()
    def init_from_teacher(self, tables: dict[str, torch.Tensor]) -> str:
        """The word table from the teacher's ``tables["word"]`` (V, D_t) projected onto its principal
        directions in order (zero columns beyond D_t), so that the first E columns are the E-wide PCA
        projection of every E < D_t (BiLSTMStudent's and MacroStudent's), a rotation of the table for E >= D_t."""
        W = tables["word"].float()
        if W.size(0) != self.word.num_embeddings:
            raise ValueError(f"teacher vocabulary {W.size(0)} != student vocabulary {self.word.num_embeddings}")
        _, _, vh = torch.linalg.svd(W - W.mean(0, keepdim=True), full_matrices=False)
        k = min(self.word.embedding_dim, vh.size(0))
        self.word.weight.zero_()
        self.word.weight[:, :k].copy_((W @ vh[:k].T).to(self.word.weight))
        return (f"word embeddings initialised from the teacher's ({W.size(1)} -> {self.word.embedding_dim}, "
                f"its first {k} principal directions)")

    def _check_path(self, path) -> None:
        if not self.space.contains(path):
            what = path.describe() if hasattr(path, "describe") else repr(path)
            raise ConfigError(f"{what} is not a genotype of the macro space {self.space.name}")

    def _head_weights(self, width: int, classifier: int):
        W = self.max_width
        w1 = self.relu[0].weight
        if self.pair:
            w1 = w1.view(w1.size(0), 4, W)[:classifier, :, :width].reshape(classifier, 4 * width)
        else:
            w1 = w1[:classifier, :width]
        return {"relu.0.weight": w1, "relu.0.bias": self.relu[0].bias[:classifier],
                "out.weight": self.out.weight[:, :classifier], "out.bias": self.out.bias}

    def forward(self, input_ids, attention_mask, token_type_ids=None, *, path, gates=None, **_):
        """``gates`` (optional): {dimension name of the space: scalar tensor} multiplying the output of the
        choice that dimension makes (``embed``: the embeddings; ``op_i`` and ``width_i``: layer i's output;
        ``depth``: the last layer's output; ``pooling``: the pooled feature; ``classifier``: the ReLU
        layer's units). A straight-through gate (value 1, gradient to the architecture parameters) is how
        GDAS (Dong & Yang 2019) trains its distribution over paths; without gates, the plain path."""
        self._check_path(path)
        E = path.embed
        widths = [E] + [w for _, w in path.layers]
        g = gates or {}
        one = None

        def gate(*names):
            out = one
            for n in names:
                if n in g:
                    out = g[n] if out is None else out * g[n]
            return out

        def scaled(y, *names):
            s = gate(*names)
            return y if s is None else y * s

        last = len(path.layers) - 1
        layers = [(lambda x, tok, m=self.layers[i][op], a=widths[i], b=w, i=i:
                   scaled(m.run(x, tok, a, b), f"op_{i}", f"width_{i}", *(("depth",) if i == last else ())))
                  for i, (op, w) in enumerate(path.layers)]
        hw = self._head_weights(widths[-1], path.classifier)

        def head(feat):
            h = torch.relu(F.linear(self.dropout(scaled(feat, "pooling")), hw["relu.0.weight"], hw["relu.0.bias"]))
            return F.linear(self.dropout(scaled(h, "classifier")), hw["out.weight"], hw["out.bias"])

        def embed(ids):
            return scaled(self.dropout(F.embedding(ids, self.word.weight[:, :E], padding_idx=0)), "embed")

        return macro_forward(input_ids, attention_mask, token_type_ids, embed=embed, layers=layers,
                             pooling=path.pooling, width=widths[-1], head=head, pair=self.pair, kind=self.kind)

    @torch.no_grad()
    def student(self, genotype) -> MacroStudent:
        """The standalone student of ``genotype`` with copies of its slices (same dtype, device and
        train/eval mode as the supernet)."""
        self._check_path(genotype)
        ref = self.word.weight
        s = MacroStudent(genotype, vocab_size=self.word.num_embeddings, kind=self.kind, num_labels=self.num_labels,
                         pair=self.pair, dropout=self.dropout_p).to(device=ref.device, dtype=ref.dtype)
        state = {"word.weight": self.word.weight[:, :genotype.embed]}
        w_in = genotype.embed
        for i, (op, w) in enumerate(genotype.layers):
            state.update({f"layers.{i}.{k}": t for k, t in self.layers[i][op].sliced_state(w_in, w).items()})
            w_in = w
        state.update(self._head_weights(w_in, genotype.classifier))
        s.load_state_dict({k: t.detach().clone() for k, t in state.items()}, strict=True)
        return s.train(self.training)
