"""Encoding ops: ``op(x, mask) -> y`` with x, y of shape (B, L, D) and mask (B, L) bool (True = token).

Contract every op keeps (checked by tests/space/test_ops.py for every registered op): outputs at
padding positions are zero, and outputs at real tokens do not change when padding is appended.
Normalisation is per token (LayerNorm), never across the batch, so padding cannot leak in.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError
from .table import Table

OPS = Table("op")


def register_op(name: str, ctor=None):
    return OPS.register(name, ctor)


def register_op_family(pattern: str, example: str, ctor=None):
    return OPS.register_family(pattern, example, ctor)


def build_op(name: str, dim: int) -> nn.Module:
    return OPS.resolve(name)(dim)


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


class Zero(nn.Module):
    def forward(self, x, mask):
        return torch.zeros_like(x)


class Identity(nn.Module):
    def forward(self, x, mask):
        return _masked(x, mask)


class BiLSTM(nn.Module):
    """Bidirectional LSTM, D/2 units per direction; packed so padding never reaches real tokens."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"lstm needs an even width, got {dim}")
        self.rnn = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)

    def forward(self, x, mask):
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return _masked(out, mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask, then a per-token LayerNorm."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"attn{heads}: width {dim} is not divisible by {heads} heads")
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, mask):
        y, _ = self.attn(x, x, x, key_padding_mask=~mask, need_weights=False)
        return _masked(self.norm(y), mask)


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
        y = self.conv(_masked(x, mask).transpose(1, 2)).transpose(1, 2)   # (B, L, D)
        return _masked(self.norm(torch.relu(y)), mask)


class Pool(nn.Module):
    """Same-length max or average pooling over a token window (padding excluded)."""

    def __init__(self, dim: int, kernel: int, kind: str):
        super().__init__()
        self.kernel, self.kind = kernel, kind

    def forward(self, x, mask):
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
        return _masked(y.transpose(1, 2), mask)


register_op("none", lambda dim: Zero())
register_op("identity", lambda dim: Identity())
register_op("lstm", BiLSTM)
register_op_family(r"attn(\d+)", "attn8", lambda dim, h: SelfAttention(dim, h))
register_op_family(r"conv(\d+)", "conv3", lambda dim, k: Conv(dim, k))
register_op_family(r"dwconv(\d+)", "dwconv3", lambda dim, k: Conv(dim, k, depthwise=True))
register_op_family(r"dilconv(\d+)", "dilconv3", lambda dim, k: Conv(dim, k, dilation=2))
register_op_family(r"max_pool(\d+)", "max_pool3", lambda dim, k: Pool(dim, k, "max"))
register_op_family(r"avg_pool(\d+)", "avg_pool3", lambda dim, k: Pool(dim, k, "avg"))


def is_parameter_free(name: str, dim: int = 8) -> bool:
    """True for ops with no weights (identity, none, pooling): DARTS' collapse drifts toward these."""
    return sum(p.numel() for p in build_op(name, dim).parameters()) == 0
