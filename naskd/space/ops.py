"""Encoding ops: ``op(x, mask) -> y`` with x, y of shape (B, L, D) and mask (B, L) bool (True = token),
or a ``Tokens`` built from it once per forward (what the ops derive from the mask is then built once and
shared, not once per op: at batch 1 a student's time is mostly per-op overhead).

Contract every op keeps (checked by tests/space/test_ops.py for every registered op): outputs at
padding positions are zero, and outputs at real tokens do not change when padding is appended.
Normalisation is per token (LayerNorm), never across the batch, so padding cannot leak in.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import ConfigError
from .table import Table

OPS = Table("op")


def register_op(name: str, ctor=None):
    return OPS.register(name, ctor)


def register_op_family(pattern: str, example: str, ctor=None):
    return OPS.register_family(pattern, example, ctor)


def build_op(name: str, dim: int) -> nn.Module:
    return OPS.resolve(name)(dim)


class Tokens:
    """A batch's padding mask ``mask`` (B, L) bool (True at real tokens, which come first), and the tensors
    ops derive from it, each built on first use and then shared by every op of one forward pass."""

    __slots__ = ("mask", "_cache")

    def __init__(self, mask: torch.Tensor):
        self.mask = mask
        self._cache: dict = {}

    def multiplier(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, L, 1): 1 at real tokens, 0 at padding."""
        key = ("multiplier", dtype)
        if key not in self._cache:
            self._cache[key] = self.mask.unsqueeze(-1).to(dtype)
        return self._cache[key]

    def key_bias(self, heads: int, dtype: torch.dtype) -> torch.Tensor:
        """(B * heads, 1, L) additive attention bias: 0 at real keys, -inf at padding keys."""
        key = ("key_bias", heads, dtype)
        if key not in self._cache:
            B, L = self.mask.shape
            bias = torch.zeros(B, 1, 1, L, dtype=dtype, device=self.mask.device).masked_fill(
                ~self.mask[:, None, None, :], float("-inf"))
            self._cache[key] = bias.expand(B, heads, 1, L).reshape(B * heads, 1, L)
        return self._cache[key]

    def reverse_index(self) -> torch.Tensor:
        """(B, L, 1) positions that reverse each sequence's real tokens, leaving the padding after them in
        place. Gathered with it twice is the identity."""
        if "reverse" not in self._cache:
            L = self.mask.size(1)
            pos = torch.arange(L, device=self.mask.device).unsqueeze(0)           # (1, L)
            n = self.mask.sum(1, keepdim=True)                                    # (B, 1)
            self._cache["reverse"] = torch.where(pos < n, n - 1 - pos, pos).unsqueeze(-1)
        return self._cache["reverse"]


def tokens(mask) -> Tokens:
    """``mask`` as ``Tokens`` (itself if it is one already)."""
    return mask if isinstance(mask, Tokens) else Tokens(mask)


def bool_mask(mask) -> torch.Tensor:
    """The (B, L) bool mask of a mask tensor or ``Tokens``."""
    return mask.mask if isinstance(mask, Tokens) else mask


def zero_padding(x: torch.Tensor, mask) -> torch.Tensor:
    """x (B, L, D) with the padding positions zeroed, for finite x: a product with the mask, five times
    faster than ``where``/``masked_fill`` on (128, 25, 64) on this CPU (an infinity at padding would
    become NaN: ops that put infinities there zero them with ``where``)."""
    return x * tokens(mask).multiplier(x.dtype)


class Zero(nn.Module):
    def forward(self, x, mask):
        return torch.zeros_like(x)


class Identity(nn.Module):
    def forward(self, x, mask):
        return zero_padding(x, mask)


def reverse_within_length(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) with each sequence's real tokens reversed (``index`` from ``Tokens.reverse_index``). Built from
    gather, so it exports to ONNX with dynamic batch and length (packed sequences do not)."""
    return torch.gather(x, 1, index.expand(-1, -1, x.size(-1)))


class BiLSTM(nn.Module):
    """Bidirectional LSTM, D/2 units per direction. Padding sits after the real tokens, so the forward
    direction never reads it before a real token; the backward direction runs on each sequence reversed
    within its own length. The result equals a packed-sequence BiLSTM at real tokens, and exports.

    Inference on small batches (no gradient, at most ``FUSE_MAX_BATCH`` sequences) runs both directions as
    one LSTM of twice the width with block-diagonal weights, on [x; x reversed]: the same numbers (the
    zero blocks add exact zeros) from one call instead of two. Where per-call overhead dominates that is
    faster (batch 1, one thread: 89 against 120 us at width 64, 24 tokens; two threads: 89 against 147);
    from batch 16 or so the doubled arithmetic costs more than the call it saves. Traced exports keep the
    two calls, which serve every batch size."""

    FUSE_MAX_BATCH = 8

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        if hidden is None:
            if dim % 2:
                raise ConfigError(f"lstm needs an even width, got {dim}")
            hidden = dim // 2
        self.fwd = nn.LSTM(dim, hidden, batch_first=True)
        self.bwd = nn.LSTM(dim, hidden, batch_first=True)
        self._fused = None            # (key, LSTM): a plain attribute, so not in the state dict

    def fused(self) -> nn.LSTM:
        """The block-diagonal two-direction LSTM, rebuilt whenever a weight changed, moved or was cast."""
        params = [getattr(lstm, n) for lstm in (self.fwd, self.bwd)
                  for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._fused is not None and self._fused[0] == key:
            return self._fused[1]
        d, h = self.fwd.input_size, self.fwd.hidden_size
        ref = params[0]
        lstm = nn.LSTM(2 * d, 2 * h, batch_first=True).to(device=ref.device, dtype=ref.dtype).eval()
        with torch.no_grad():
            for p in lstm.parameters():
                p.zero_()
            for k, src in enumerate((self.fwd, self.bwd)):     # direction k: units k*h..(k+1)*h of each gate
                for g in range(4):                               # gates i, f, g, o: rows g*h..(g+1)*h
                    rows, out = slice(g * h, (g + 1) * h), slice(g * 2 * h + k * h, g * 2 * h + (k + 1) * h)
                    lstm.weight_ih_l0[out, k * d:(k + 1) * d] = src.weight_ih_l0[rows]
                    lstm.weight_hh_l0[out, k * h:(k + 1) * h] = src.weight_hh_l0[rows]
                    lstm.bias_ih_l0[out] = src.bias_ih_l0[rows]
                    lstm.bias_hh_l0[out] = src.bias_hh_l0[rows]
        lstm.requires_grad_(False)
        self._fused = (key, lstm)
        return lstm

    def forward(self, x, mask):
        # the input needs no zeroing: padding comes after the real tokens in both directions, so neither
        # LSTM reads it before a real token
        index = tokens(mask).reverse_index()
        h = self.fwd.hidden_size
        # traced graphs (ONNX, TorchScript) serve every batch size: they keep the two calls
        if not torch.is_grad_enabled() and x.size(0) <= self.FUSE_MAX_BATCH and not torch.jit.is_tracing():
            y, _ = self.fused()(torch.cat([x, reverse_within_length(x, index)], -1))   # (B, L, 2H)
            f, b = y[..., :h], y[..., h:]
        else:
            f, _ = self.fwd(x)                                                # (B, L, H)
            b, _ = self.bwd(reverse_within_length(x, index))
        return zero_padding(torch.cat([f, reverse_within_length(b, index)], -1), mask)   # (B, L, 2H)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017) over real tokens only (a key
    padding mask), output projection, then a per-token LayerNorm. Written out rather than
    ``nn.MultiheadAttention`` so that exported graphs keep dynamic batch and length."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"attn{heads}: width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask):
        B, L, _ = x.shape
        h, d = self.heads, self.head_dim
        mask = tokens(mask)
        qkv = self.qkv(x).view(B, L, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, B * h, L, d)
        q, k, v = qkv.unbind(0)                                               # (B*h, L, d) each
        bias = mask.key_bias(h, x.dtype)                  # (B*h, 1, L): -inf at padding keys
        # scale, product and mask in one kernel. Written out: on this CPU scaled_dot_product_attention was
        # no faster at batch 1 and up to 2x slower at batch 128 and 24 tokens (measured 2026-11-22, torch 2.13)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=d ** -0.5)  # (B*h, L, L)
        y = torch.bmm(torch.softmax(scores, dim=-1), v)                       # (B*h, L, d)
        y = y.view(B, h, L, d).transpose(1, 2).reshape(B, L, h * d)           # (B, L, D)
        return zero_padding(self.norm(self.proj(y)), mask)


class Conv(nn.Module):
    """Same-length 1-D convolution over tokens (input zeroed at padding), ReLU, LayerNorm."""

    def __init__(self, dim: int, kernel: int, dilation: int = 1, depthwise: bool = False):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"convolution kernels must be odd and positive, got {kernel}")
        pad = dilation * (kernel - 1) // 2
        if depthwise:
            self.conv = nn.Sequential(
                nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation, groups=dim, bias=False),
                nn.Conv1d(dim, dim, 1))
        else:
            self.conv = nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask):
        mask = tokens(mask)
        y = self.conv(zero_padding(x, mask).transpose(1, 2)).transpose(1, 2)   # (B, L, D)
        return zero_padding(self.norm(torch.relu(y)), mask)


class Pool(nn.Module):
    """Same-length max or average pooling over a token window (padding excluded)."""

    def __init__(self, dim: int, kernel: int, kind: str):
        super().__init__()
        self.kernel, self.kind = kernel, kind

    def forward(self, x, mask):
        mask = bool_mask(mask)
        m = mask.unsqueeze(1).to(x.dtype)                       # (B, 1, L)
        xt = x.transpose(1, 2)                                  # (B, D, L)
        pad = self.kernel // 2
        if self.kind == "max":
            filled = xt.masked_fill(~mask.unsqueeze(1), float("-inf"))
            y = nn.functional.max_pool1d(filled, self.kernel, stride=1, padding=pad)
        else:
            s = nn.functional.avg_pool1d(xt * m, self.kernel, stride=1, padding=pad, count_include_pad=True)
            c = nn.functional.avg_pool1d(m, self.kernel, stride=1, padding=pad, count_include_pad=True)
            y = s / c.clamp_min(1e-6)
        return torch.where(mask.unsqueeze(-1), y.transpose(1, 2), 0.0)   # max: -inf where all is padding


register_op("none", lambda dim: Zero())
register_op("identity", lambda dim: Identity())
register_op("lstm", BiLSTM)
register_op_family(r"attn(\d+)", "attn8", lambda dim, h: SelfAttention(dim, h))
register_op_family(r"conv(\d+)", "conv3", lambda dim, k: Conv(dim, k))
register_op_family(r"dwconv(\d+)", "dwconv3", lambda dim, k: Conv(dim, k, depthwise=True))
register_op_family(r"dilconv(\d+)", "dilconv3", lambda dim, k: Conv(dim, k, dilation=2))
register_op_family(r"max_pool(\d+)", "max_pool3", lambda dim, k: Pool(dim, k, "max"))
register_op_family(r"avg_pool(\d+)", "avg_pool3", lambda dim, k: Pool(dim, k, "avg"))


@functools.lru_cache(maxsize=None)
def is_parameter_free(name: str, dim: int = 8) -> bool:
    """True for ops with no weights (identity, none, pooling): DARTS' collapse drifts toward these."""
    return sum(p.numel() for p in build_op(name, dim).parameters()) == 0
