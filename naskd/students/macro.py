"""Students of the macro space: a stack of layers over word embeddings, a sentence pooling, Tang et al.
2019's ReLU-and-classifier head.

A :class:`MacroStudent` is ``word embedding (E) -> dropout -> layer_1 .. layer_d -> pooling -> dropout ->
Linear(F, C) -> ReLU -> dropout -> Linear(C, labels)``; layer i maps width ``w_{i-1}`` to ``w_i``
(``w_0 = E``). Layer ops:

* ``lstm``: a BiLSTM (:class:`naskd.space.ops.BiLSTM`) of ``w/2`` units per direction;
* ``conv{k}`` / ``dwconv{k}``: a same-length 1-D convolution (standard, or depthwise then pointwise) from
  ``w_in`` to ``w`` channels over the input zeroed at padding, ReLU, LayerNorm;
* ``attn{h}``: ``Linear(w_in, w)``, then ``h``-head self-attention at width ``w`` (keys masked at padding),
  its output projection added to the linear's output (residual), LayerNorm.

Every layer's output is zero at padding. Poolings of the last layer's (B, L, w) states to (B, w):
``ends`` (the first half at the last real token concatenated with the second half at the first token:
for a BiLSTM its final forward and final backward states, as in BiLSTMStudent.encode), ``max`` and
``mean`` over real tokens. Sentence pairs: the encoder (layers and pooling) runs on each sentence alone
and the head reads [h1, h2, h1*h2, |h1-h2|], as in BiLSTMStudent.

The genotype ``emb300 | lstm300 | ends | relu200`` is BiLSTMStudent(embed=300, hidden=150, relu=200)
exactly: the same parameters under the names ``word``, ``layers.0`` (its ``lstm``), ``relu``, ``out``.

The functions here (:func:`conv_apply`, :func:`attention_apply`, :func:`pool`, :func:`macro_forward`) take
their weights as arguments, so that the supernet (:mod:`naskd.supernet.macro`) runs the same arithmetic on
width slices of its weights.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tasks import REGRESSION, TAGGING
from ..errors import ConfigError
from ..network import init_word_table
from ..records import ModelOutput
from ..space.ops import BiLSTM, Tokens, zero_padding

POOLINGS = ("ends", "max", "mean")
_OP = re.compile(r"(lstm)|(conv|dwconv)(\d+)|(attn)(\d+)")


def parse_op(name: str) -> tuple[str, int]:
    """``(family, number)`` of a macro layer op: ``("lstm", 0)``, ``("conv", k)``, ``("dwconv", k)`` (k odd
    kernel width), ``("attn", h)`` (h heads >= 1). :class:`ConfigError` for any other name."""
    m = _OP.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ConfigError(f"unknown macro op {name!r}; known: lstm, conv<k>, dwconv<k> (k odd), attn<heads>")
    if m.group(1):
        return "lstm", 0
    if m.group(2):
        k = int(m.group(3))
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"macro op {name}: convolution kernels must be odd and positive, got {k}")
        return m.group(2), k
    h = int(m.group(5))
    if h < 1:
        raise ConfigError(f"macro op {name}: needs at least one head")
    return "attn", h


def check_layer(op: str, width: int) -> None:
    """ConfigError unless ``op`` builds at output ``width``: an even width >= 2 (a BiLSTM's two halves, the
    ``ends`` pooling's), divisible by an attention op's heads."""
    family, n = parse_op(op)
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
        raise ConfigError(f"macro layer {op}: width must be an even integer >= 2, got {width!r}")
    if family == "attn" and width % n:
        raise ConfigError(f"macro layer {op}: width {width} is not divisible by {n} heads")


# --- the arithmetic, on weights passed in ------------------------------------------------------------

def conv_apply(x, tok: Tokens, kernel: int, width: int, weight, bias, norm_weight, norm_bias, depthwise=None):
    """x (B, L, in) -> (B, L, width): conv (``weight`` (width, in, k), or with ``depthwise`` (in, 1, k) first
    and ``weight`` (width, in, 1)) over x zeroed at padding, ReLU, LayerNorm; zero at padding. ``width``
    and ``kernel`` are Python ints, so traced graphs keep them constant."""
    xt = zero_padding(x, tok).transpose(1, 2)                                   # (B, in, L)
    if depthwise is not None:
        xt = F.conv1d(xt, depthwise, None, padding=kernel // 2, groups=int(depthwise.shape[0]))
        y = F.conv1d(xt, weight, bias)
    else:
        y = F.conv1d(xt, weight, bias, padding=kernel // 2)
    y = torch.relu(y.transpose(1, 2))                                           # (B, L, width)
    return zero_padding(F.layer_norm(y, (width,), norm_weight, norm_bias), tok)


def key_bias(tok: Tokens, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B * heads, 1, L) additive attention bias: 0 at real keys, -1e9 at padding (finite, so that a row
    without real tokens, such as an empty second sentence, attends uniformly instead of giving NaN; at
    rows with a real token the padding's weight is exactly 0). Built once per Tokens."""
    key = ("macro_key_bias", heads, dtype)
    cache = tok._cache
    if key not in cache:
        B, L = tok.mask.shape
        bias = torch.zeros(B, 1, 1, L, dtype=dtype, device=tok.mask.device).masked_fill(
            ~tok.mask[:, None, None, :], -1e9)
        cache[key] = bias.expand(B, heads, 1, L).reshape(B * heads, 1, L)
    return cache[key]


def attention_apply(x, tok: Tokens, heads: int, width: int, in_weight, in_bias, qkv_weight, qkv_bias,
                    proj_weight, proj_bias, norm_weight, norm_bias):
    """x (B, L, in) -> (B, L, D): u = x W_in^T + b (D = ``width``, a Python int); multi-head self-attention over u
    (``qkv_weight`` (3D, D): the q, k, v blocks in turn, each heads x D/heads; keys masked at padding);
    LayerNorm(u + proj(attention)); zero at padding."""
    u = F.linear(x, in_weight, in_bias)                                          # (B, L, D)
    B, L = x.shape[0], x.shape[1]
    D = width
    h, d = heads, width // heads
    qkv = F.linear(u, qkv_weight, qkv_bias).view(B, L, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, B * h, L, d)
    q, k, v = qkv.unbind(0)                                                      # (B*h, L, d) each
    scores = torch.baddbmm(key_bias(tok, h, x.dtype), q, k.transpose(1, 2), alpha=d ** -0.5)   # (B*h, L, L)
    y = torch.bmm(torch.softmax(scores, dim=-1), v)                             # (B*h, L, d)
    y = y.view(B, h, L, d).transpose(1, 2).reshape(B, L, D)
    return zero_padding(F.layer_norm(u + F.linear(y, proj_weight, proj_bias), (D,), norm_weight, norm_bias), tok)


def pool(h: torch.Tensor, mask: torch.Tensor, how: str, width: int) -> torch.Tensor:
    """h (B, L, width) zero at padding, mask (B, L) bool -> (B, width). ``ends``: h[:, last real token,
    :width/2] then h[:, 0, width/2:]; ``max`` / ``mean`` over the real tokens (0 for a row without any)."""
    if how == "ends":
        half = width // 2
        last = (mask.sum(1) - 1).clamp_min(0)                                    # (B,)
        fwd = h[..., :half].gather(1, last[:, None, None].expand(-1, 1, half)).squeeze(1)
        return torch.cat([fwd, h[:, 0, half:]], -1)
    if how == "max":
        y = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return torch.where(mask.sum(1, keepdim=True) > 0, y, torch.zeros_like(y))
    if how == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ConfigError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")


def split_pair(e: torch.Tensor, mask: torch.Tensor, token_type_ids):
    """The two sentences of a pair batch: (mask_a, e_b, mask_b, back). ``e`` (B, L, E); sentence a is
    the real tokens of segment 0 (first), b those of segment 1 after it; ``e_b`` (B, L, E) holds b's
    embeddings from position 0 on, ``mask_b`` (B, L) its real tokens. ``back`` (B, L) maps each position
    of the pair to its position in ``e_b`` (see :func:`merge_pair`)."""
    tt = token_type_ids if token_type_ids is not None else torch.zeros_like(mask, dtype=torch.long)
    mask_a = mask & (tt == 0)
    in_b = mask & (tt == 1)
    len_a = mask_a.sum(1, keepdim=True)                                          # b starts where a ends
    L = e.size(1)
    pos = torch.arange(L, device=e.device).unsqueeze(0)
    idx = (len_a + pos).clamp_max(L - 1)                                         # (B, L)
    e_b = e.gather(1, idx.unsqueeze(-1).expand_as(e))
    mask_b = pos < in_b.sum(1, keepdim=True)
    back = (pos - len_a).clamp_min(0)
    return mask_a, e_b, mask_b, (back, in_b)


def merge_pair(h_a: torch.Tensor, h_b: torch.Tensor, back) -> torch.Tensor:
    """One layer's states of both sentences at the pair's positions: h_a (zero outside sentence a) plus
    h_b moved back to where sentence b sits. (B, L, D)."""
    index, in_b = back
    moved = h_b.gather(1, index.unsqueeze(-1).expand(-1, -1, h_b.size(-1)))
    return h_a + zero_padding(moved, in_b)


def macro_forward(input_ids, attention_mask, token_type_ids, *, embed: Callable, layers: Sequence[Callable],
                  pooling: str, width: int, head: Callable, pair: bool, kind: str) -> dict:
    """The forward pass shared by the student and the supernet's paths. ``embed(input_ids)`` -> (B, L, E)
    (dropout included), ``layers[i](x, tokens)`` -> (B, L, w_i), ``head(feature)`` -> (B, labels) (its
    dropouts included); ``width`` the last layer's. Returns ``{"logits", "states", "mask"}``: states the
    embeddings and each layer's output (for pairs both sentences' outputs at their positions)."""
    mask = attention_mask.bool()
    e = zero_padding(embed(input_ids), mask)                                     # (B, L, E)

    def encode(x, m):
        tok, states = Tokens(m), []
        for layer in layers:
            x = layer(x, tok)
            states.append(x)
        return pool(x, m, pooling, width), states

    if pair:
        mask_a, e_b, mask_b, back = split_pair(e, mask, token_type_ids)
        (h1, sa), (h2, sb) = encode(e, mask_a), encode(e_b, mask_b)
        feat = torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1)
        states = [merge_pair(a, b, back) for a, b in zip(sa, sb)]
    else:
        feat, states = encode(e, mask)
    logits = head(feat)
    if kind == REGRESSION:
        logits = logits.squeeze(-1)
    return ModelOutput(logits=logits, states=[e, *states], mask=mask)


# --- the layers ------------------------------------------------------------------------------------

class MacroConv(nn.Module):
    """``conv{k}`` / ``dwconv{k}`` from ``in_width`` to ``width`` channels (see :func:`conv_apply`)."""

    def __init__(self, in_width: int, width: int, kernel: int, depthwise: bool = False):
        super().__init__()
        self.kernel, self.width = kernel, width
        if depthwise:
            self.depthwise = nn.Conv1d(in_width, in_width, kernel, padding=kernel // 2, groups=in_width, bias=False)
            self.conv = nn.Conv1d(in_width, width, 1)
        else:
            self.depthwise = None
            self.conv = nn.Conv1d(in_width, width, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(width)

    def forward(self, x, mask):
        tok = mask if isinstance(mask, Tokens) else Tokens(mask)
        dw = None if self.depthwise is None else self.depthwise.weight
        return conv_apply(x, tok, self.kernel, self.width, self.conv.weight, self.conv.bias, self.norm.weight,
                          self.norm.bias, dw)


class MacroAttention(nn.Module):
    """``attn{h}`` from ``in_width`` to ``width`` (see :func:`attention_apply`)."""

    def __init__(self, in_width: int, width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ConfigError(f"attn{heads}: width {width} is not divisible by {heads} heads")
        self.heads, self.width = heads, width
        self.inp = nn.Linear(in_width, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x, mask):
        tok = mask if isinstance(mask, Tokens) else Tokens(mask)
        return attention_apply(x, tok, self.heads, self.width, self.inp.weight, self.inp.bias, self.qkv.weight,
                               self.qkv.bias, self.proj.weight, self.proj.bias, self.norm.weight, self.norm.bias)


def build_layer(op: str, in_width: int, width: int) -> nn.Module:
    """The module of one macro layer: ``op`` from ``in_width`` to ``width`` (ConfigError when it cannot build).
    It takes ``(x (B, L, in_width), mask or Tokens)`` and returns (B, L, width), zero at padding."""
    check_layer(op, width)
    return layer_of(op, in_width, width, BiLSTM, MacroConv, MacroAttention)


def layer_of(op: str, in_width: int, width: int, lstm, conv, attention) -> nn.Module:
    """``op``'s module from the three families' classes (the student's, or the supernet's sliced ones):
    ``lstm(in_width, width // 2)`` (a BiLSTM's units per direction), ``conv(in_width, width, k,
    depthwise=...)``, ``attention(in_width, width, heads)``."""
    family, n = parse_op(op)
    if family == "lstm":
        return lstm(in_width, width // 2)
    if family in ("conv", "dwconv"):
        return conv(in_width, width, n, depthwise=family == "dwconv")
    return attention(in_width, width, n)


def pair_features(width: int, pair: bool) -> int:
    """The head's input width: the pooled width, four times for pairs ([h1, h2, h1*h2, |h1-h2|])."""
    return width * (4 if pair else 1)


class MacroStudent(nn.Module):
    """The standalone student of a :class:`naskd.space.macro.MacroGenotype` (see the module docstring).

    ``forward(input_ids, attention_mask, token_type_ids=None)`` (each (B, L) int) returns ``{"logits"
    (B, labels) or (B,) for regression, "states": [embeddings (B, L, E), each layer's output (B, L, w_i)],
    "mask" (B, L) bool}``. ConfigError for a tagging task (a sentence classifier)."""

    def __init__(self, genotype, *, vocab_size: int, kind: str, num_labels: int, pair: bool,
                 dropout: float = 0.1):
        super().__init__()
        if kind == TAGGING:
            raise ConfigError("the macro space is for sentence tasks (single, pair, regression), not tagging; "
                              "use nas_kd or teacher")
        self.genotype = genotype
        self.kind, self.pair, self.num_labels = kind, pair, num_labels
        self.word = nn.Embedding(vocab_size, genotype.embed, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        widths = [genotype.embed] + [w for _, w in genotype.layers]
        self.layers = nn.ModuleList(build_layer(op, widths[i], w) for i, (op, w) in enumerate(genotype.layers))
        self.width = widths[-1]
        self.relu = nn.Sequential(nn.Linear(pair_features(self.width, pair), genotype.classifier), nn.ReLU())
        self.out = nn.Linear(genotype.classifier, num_labels)

    @torch.no_grad()
    def init_from_teacher(self, tables: dict[str, torch.Tensor]) -> str:
        """Word embeddings from the teacher's table ``tables["word"]`` (V, D_t), PCA-projected to E."""
        return init_word_table(self.word, tables)

    def head(self, feat):
        """(B, F) -> (B, labels): dropout, ReLU layer, dropout, classifier."""
        return self.out(self.dropout(self.relu(self.dropout(feat))))

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        return macro_forward(input_ids, attention_mask, token_type_ids,
                             embed=lambda ids: self.dropout(self.word(ids)), layers=list(self.layers),
                             pooling=self.genotype.pooling, width=self.width, head=self.head, pair=self.pair,
                             kind=self.kind)


# --- latency parts (naskd.space.macro.MacroSpace.latency_parts) ------------------------------------------

def _synthetic_segments(mask: torch.Tensor) -> torch.Tensor:
    """token_type_ids for timing a pair part on a plain batch: the second half of each row's real tokens
    is sentence b."""
    pos = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
    n = mask.sum(1, keepdim=True)
    return (mask & (pos >= (n + 1) // 2)).long()


class EmbedPart(nn.Module):
    """``macro:embed:E``: (input_ids, attention_mask) -> (B, L, E) embeddings, zero at padding."""

    def __init__(self, vocab_size: int, embed: int, dropout: float = 0.1):
        super().__init__()
        self.word = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids, attention_mask):
        return zero_padding(self.dropout(self.word(input_ids)), attention_mask.bool())


class SplitPart(nn.Module):
    """``macro:split:E``: a pair batch's sentence b moved to the front (:func:`split_pair`)."""

    def forward(self, x, mask):
        mask = mask.bool()
        return split_pair(x, mask, _synthetic_segments(mask))


class MergePart(nn.Module):
    """``macro:merge:w``: one layer's states of both sentences back at the pair's positions."""

    def forward(self, x, mask):
        mask = mask.bool()
        tt = _synthetic_segments(mask)
        pos = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
        back = ((pos - (mask & (tt == 0)).sum(1, keepdim=True)).clamp_min(0), mask & (tt == 1))
        return merge_pair(x, x, back)


class LayerPart(nn.Module):
    """``macro:{op}:{in}:{out}``: one layer, (x (B, L, in), mask) -> (B, L, out)."""

    def __init__(self, op: str, in_width: int, width: int):
        super().__init__()
        self.layer = build_layer(op, in_width, width)

    def forward(self, x, mask):
        return self.layer(x, Tokens(mask.bool()))


class PoolPart(nn.Module):
    """``macro:pool:{how}:{w}``: (x (B, L, w), mask) -> (B, w)."""

    def __init__(self, how: str, width: int):
        super().__init__()
        self.how, self.width = how, width

    def forward(self, x, mask):
        return pool(x, mask.bool(), self.how, self.width)


class HeadPart(nn.Module):
    """``macro:head:{w}:{C}:{labels}:{task}``: the pair features (pairs) and the head, the pooled vectors
    read at the first (and for pairs the last) position of x (B, L, w)."""

    def __init__(self, width: int, classifier: int, num_labels: int, kind: str, pair: bool, dropout: float = 0.1):
        super().__init__()
        self.kind, self.pair = kind, pair
        self.dropout = nn.Dropout(dropout)
        self.relu = nn.Sequential(nn.Linear(pair_features(width, pair), classifier), nn.ReLU())
        self.out = nn.Linear(classifier, num_labels)

    def forward(self, x, mask):
        h1 = x[:, 0]
        feat = torch.cat([h1, x[:, -1], h1 * x[:, -1], (h1 - x[:, -1]).abs()], -1) if self.pair else h1
        logits = self.out(self.dropout(self.relu(self.dropout(feat))))
        return logits.squeeze(-1) if self.kind == REGRESSION else logits


def part_module(key: str, ctx) -> tuple[nn.Module, int]:
    """``(module in eval mode, input width)`` of a macro latency key (see
    :meth:`naskd.space.macro.MacroSpace.latency_parts`); ConfigError for a key it does not know."""
    parts = key.split(":")
    try:
        if parts[0] != "macro" or len(parts) < 3:
            raise ValueError
        what = parts[1]
        if what == "embed" and len(parts) == 3:
            return EmbedPart(ctx.vocab_size, int(parts[2]), ctx.dropout).eval(), 0
        if what == "split" and len(parts) == 3:
            return SplitPart().eval(), int(parts[2])
        if what == "merge" and len(parts) == 3:
            return MergePart().eval(), int(parts[2])
        if what == "pool" and len(parts) == 4 and parts[2] in POOLINGS:
            return PoolPart(parts[2], int(parts[3])).eval(), int(parts[3])
        if what == "head" and len(parts) == 6:
            w, c, n = int(parts[2]), int(parts[3]), int(parts[4])
            kind = parts[5].split("+")[0]
            pair = kind == "pair" or parts[5].endswith("+pair")
            return HeadPart(w, c, n, kind, pair, ctx.dropout).eval(), w
        if len(parts) == 4:
            parse_op(what)
            return LayerPart(what, int(parts[2]), int(parts[3])).eval(), int(parts[2])
    except ValueError:
        pass
    raise ConfigError(f"unknown macro latency part {key!r}")
