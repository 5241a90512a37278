"""Aggregation ops: ``agg(x, mask) -> (B, D)`` from token states x (B, L, D) and mask (B, L) bool (or the
``Tokens`` built from it)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .ops import bool_mask, tokens
from .table import Table

AGGREGATORS = Table("aggregator")


def register_aggregator(name: str, ctor=None):
    return AGGREGATORS.register(name, ctor)


def build_aggregator(name: str, dim: int) -> nn.Module:
    return AGGREGATORS.resolve(name)(dim)


class MaxPool(nn.Module):
    def forward(self, x, mask):
        return x.masked_fill(~bool_mask(mask).unsqueeze(-1), float("-inf")).max(1).values


class AvgPool(nn.Module):
    def forward(self, x, mask):
        m = tokens(mask).multiplier(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-9) -> torch.Tensor:
    """Sabour et al. 2017: v = |s|^2 / (1 + |s|^2) * s / |s|."""
    sq = (s * s).sum(dim, keepdim=True)
    return sq / (1.0 + sq) * s / torch.sqrt(sq + eps)


class DynamicRouting(nn.Module):
    """Routing by agreement over tokens (Gong et al. 2018, "Information Aggregation via Dynamic Routing
    for Sequence Encoding").

    Each token i sends a message u_{j|i} = W_j h_i to each of ``capsules`` output capsules j. With
    coupling logits b_ij = 0, repeat ``iterations`` times: c_i = softmax_j(b_i); s_j = sum_i c_ij u_{j|i};
    v_j = squash(s_j); b_ij += u_{j|i} . v_j. Padding tokens get c_ij = 0, so they send nothing.
    The output is the concatenation of the v_j (capsules * D/capsules = D).
    """

    def __init__(self, dim: int, capsules: int = 4, iterations: int = 3):
        super().__init__()
        if dim % capsules:
            raise ConfigError(f"dynamic_routing: width {dim} is not divisible by {capsules} capsules")
        if iterations < 1:
            raise ConfigError("dynamic_routing needs at least one iteration")
        self.capsules, self.iterations, self.cap_dim = capsules, iterations, dim // capsules
        self.W = nn.Linear(dim, dim, bias=False)   # the W_j stacked: (D) -> (capsules * cap_dim)

    def forward(self, x, mask):
        B, L, _ = x.shape
        u = self.W(x).view(B, L, self.capsules, self.cap_dim)            # (B, L, J, C) messages u_{j|i}
        m = tokens(mask).multiplier(x.dtype)                                # (B, L, 1)
        b = torch.zeros(B, L, self.capsules, dtype=x.dtype, device=x.device)
        for it in range(self.iterations):
            c = torch.softmax(b, dim=-1) * m                                # (B, L, J), 0 at padding
            s = (c.unsqueeze(-1) * u).sum(1)                                # (B, J, C)
            v = squash(s)
            if it < self.iterations - 1:
                b = b + (u * v.unsqueeze(1)).sum(-1)                        # agreement u_{j|i} . v_j
        return v.reshape(B, -1)


class SelfAttentivePooling(nn.Module):
    """Structured self-attentive pooling (Lin et al. 2017): A = softmax(W2 tanh(W1 H^T)) over tokens
    with ``hops`` rows; M = A H; the flattened (hops * D) matrix is projected back to D. (The paper's
    ||AA^T - I||^2 penalty is left out: the search's distillation loss regularises it already.)"""

    def __init__(self, dim: int, hops: int = 4, attn_dim: int | None = None):
        super().__init__()
        attn_dim = attn_dim or dim
        self.w1 = nn.Linear(dim, attn_dim, bias=False)
        self.w2 = nn.Linear(attn_dim, hops, bias=False)
        self.out = nn.Linear(hops * dim, dim)

    def forward(self, x, mask):
        scores = self.w2(torch.tanh(self.w1(x)))                           # (B, L, r)
        scores = scores.masked_fill(~bool_mask(mask).unsqueeze(-1), float("-inf"))
        a = torch.softmax(scores, dim=1)                                    # over tokens
        pooled = torch.einsum("blr,bld->brd", a, x)                         # (B, r, D)
        return self.out(pooled.flatten(1))


register_aggregator("max_pool", lambda dim: MaxPool())
register_aggregator("avg_pool", lambda dim: AvgPool())
register_aggregator("dynamic_routing", DynamicRouting)
register_aggregator("self_attn_pool", SelfAttentivePooling)
