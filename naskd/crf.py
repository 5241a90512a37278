"""A batched, masked linear-chain CRF: log-likelihood, Viterbi, k-best Viterbi and posterior marginals.

Shapes: B batch, W positions (words), T tags. ``emissions`` (B, W, T); ``mask`` (B, W) bool with each
row's real positions first (a prefix) and at least one real position per row. Parameters: ``start``
(T,), ``end`` (T,) and ``trans`` (T, T) with ``trans[i, j]`` the score of tag i followed by tag j.

The score of a tag sequence y_1..y_n is start[y_1] + e_1[y_1] + sum_{l>1} (trans[y_{l-1}, y_l] + e_l[y_l])
+ end[y_n]. Every dynamic programme runs in log space over the real positions only; padded positions
carry the state through unchanged, so one batch may mix lengths.
"""
from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"a CRF needs at least one tag, got {num_tags}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.trans = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    # ------------------------------------------------------------------------------ scores
    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) score of the given tag sequences (tags (B, W); values at padding are ignored)."""
        return sequence_score(emissions, tags, mask, self.start, self.end, self.trans)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) log Z by the forward algorithm."""
        return log_partition(emissions, mask, self.start, self.end, self.trans)

    def log_likelihood(self, emissions, tags, mask) -> torch.Tensor:
        """(B,) log p(tags | x)."""
        return self.score(emissions, tags, mask) - self.log_partition(emissions, mask)

    def nll(self, emissions, tags, mask) -> torch.Tensor:
        """Mean negative log-likelihood over the batch (the CRF training loss)."""
        return -self.log_likelihood(emissions, tags, mask).mean()

    def substructure_scores(self, emissions: torch.Tensor) -> torch.Tensor:
        """(B, W, T, T) s_l(i, j) = trans[i, j] + e_l[j] for l > 1 and start[j] + e_1[j] at l = 1 (the
        same for every i), the factor scores whose sum along a path is its score (less ``end``)."""
        return substructure_scores(emissions, self.start, self.trans)

    # ------------------------------------------------------------------------------ decoding
    def viterbi(self, emissions, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Best paths: tags (B, W) (0 at padding) and their scores (B,)."""
        tags, scores = self.kbest(emissions, mask, 1)
        return tags[:, 0], scores[:, 0]

    def kbest(self, emissions, mask, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best paths: tags (B, k, W) and scores (B, k), best first. Where a sentence has fewer
        than k paths the missing ones score -inf."""
        return kbest_viterbi(emissions, mask, self.start, self.end, self.trans, k)

    def marginals(self, emissions, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Posteriors: unary (B, W, T) p(y_l = j) and pairwise (B, W, T, T) p(y_{l-1} = i, y_l = j)
        (zero at l = 1 and at padding)."""
        return marginals(emissions, mask, self.start, self.end, self.trans)


def _check(emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be (B, W, T), got {tuple(emissions.shape)}")
    mask = mask.bool()
    if emissions.size(1) and not bool(mask[:, 0].all()):
        raise ValueError("every sentence needs at least one real position (mask[:, 0] all True)")
    return mask


def sequence_score(emissions, tags, mask, start, end, trans) -> torch.Tensor:
    mask = _check(emissions, mask)
    B, W, _ = emissions.shape
    tags = tags.clamp_min(0)                                             # padding may hold -100
    e = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)               # (B, W)
    s = start[tags[:, 0]] + e[:, 0]
    if W > 1:
        t = trans[tags[:, :-1], tags[:, 1:]] + e[:, 1:]                    # (B, W-1)
        s = s + (t * mask[:, 1:]).sum(1)
    last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
    return s + end[last]


def log_partition(emissions, mask, start, end, trans) -> torch.Tensor:
    mask = _check(emissions, mask)
    alpha = start + emissions[:, 0]                                      # (B, T)
    for l in range(1, emissions.size(1)):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, l].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, l].unsqueeze(1), nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def _forward_backward(emissions, mask, start, end, trans):
    """alpha (B, W, T): log-sum of prefixes ending in tag j at l; beta (B, W, T): log-sum of suffixes
    after tag j at l (``end`` included); log Z (B,)."""
    B, W, T = emissions.shape
    alphas = [start + emissions[:, 0]]
    for l in range(1, W):
        nxt = torch.logsumexp(alphas[-1].unsqueeze(2) + trans + emissions[:, l].unsqueeze(1), dim=1)
        alphas.append(torch.where(mask[:, l].unsqueeze(1), nxt, alphas[-1]))
    alpha = torch.stack(alphas, 1)
    log_z = torch.logsumexp(alphas[-1] + end, dim=1)
    last = mask.sum(1) - 1                                               # (B,)
    betas = [None] * W
    beta = end.expand(B, T)
    for l in range(W - 1, -1, -1):
        if l < W - 1:
            nxt = torch.logsumexp(trans + (emissions[:, l + 1] + betas[l + 1]).unsqueeze(1), dim=2)
            # position l is the last real one: only the end transition follows it
            beta = torch.where((l < last).unsqueeze(1), nxt, end.expand(B, T))
        betas[l] = beta
    return alpha, torch.stack(betas, 1), log_z


def marginals(emissions, mask, start, end, trans):
    mask = _check(emissions, mask)
    alpha, beta, log_z = _forward_backward(emissions, mask, start, end, trans)
    m = mask.unsqueeze(-1)
    unary = torch.exp(alpha + beta - log_z[:, None, None]) * m
    pair = torch.zeros(*emissions.shape, emissions.size(-1), dtype=emissions.dtype, device=emissions.device)
    if emissions.size(1) > 1:
        lp = (alpha[:, :-1].unsqueeze(3) + trans + (emissions[:, 1:] + beta[:, 1:]).unsqueeze(2)
              - log_z[:, None, None, None])                              # (B, W-1, T, T)
        pair[:, 1:] = torch.exp(lp) * mask[:, 1:, None, None]
    return unary, pair


def substructure_scores(emissions, start, trans) -> torch.Tensor:
    B, W, T = emissions.shape
    s = trans.unsqueeze(0).unsqueeze(0) + emissions.unsqueeze(2)          # (B, W, T, T)
    first = (start + emissions[:, 0]).unsqueeze(1).expand(B, T, T)
    return torch.cat([first.unsqueeze(1), s[:, 1:]], 1)


def kbest_viterbi(emissions, mask, start, end, trans, k: int):
    """k-best Viterbi: per position and tag keep the k best prefix scores with back-pointers to
    (previous tag, previous rank); padded positions pass every (tag, rank) through unchanged."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    mask = _check(emissions, mask)
    B, W, T = emissions.shape
    neg = torch.finfo(emissions.dtype).min / 4
    ninf = torch.full((B, T, k), float("-inf"), dtype=emissions.dtype, device=emissions.device)
    score = ninf.clone()
    score[:, :, 0] = start + emissions[:, 0]                             # (B, T, k)
    ptr_tag, ptr_rank = [], []
    ident_tag = torch.arange(T, device=emissions.device).view(1, T, 1).expand(B, T, k)
    ident_rank = torch.arange(k, device=emissions.device).view(1, 1, k).expand(B, T, k)
    for l in range(1, W):
        # candidates (B, T_prev * k, T_next): previous (tag, rank) into next tag
        cand = (score.unsqueeze(3) + trans.view(1, T, 1, T)).reshape(B, T * k, T)
        cand = cand + emissions[:, l].unsqueeze(1)
        top, idx = cand.clamp_min(neg).topk(k, dim=1)                   # (B, k, T)
        top = torch.where(top <= neg, torch.full_like(top, float("-inf")), top)
        new_score = top.transpose(1, 2)                                  # (B, T, k)
        prev_tag = (idx // k).transpose(1, 2)
        prev_rank = (idx % k).transpose(1, 2)
        keep = mask[:, l].view(B, 1, 1)
        score = torch.where(keep, new_score, score)
        ptr_tag.append(torch.where(keep, prev_tag, ident_tag))
        ptr_rank.append(torch.where(keep, prev_rank, ident_rank))
    final = (score + end.view(1, T, 1)).reshape(B, T * k)
    best, idx = final.clamp_min(neg).topk(k, dim=1)                      # (B, k)
    best = torch.where(best <= neg, torch.full_like(best, float("-inf")), best)
    tag, rank = idx // k, idx % k
    paths = torch.zeros(B, k, W, dtype=torch.long, device=emissions.device)
    paths[:, :, W - 1] = tag
    for l in range(W - 1, 0, -1):
        pt, pr = ptr_tag[l - 1], ptr_rank[l - 1]                         # (B, T, k)
        flat = tag * k + rank                                            # (B, k)
        tag = pt.reshape(B, T * k).gather(1, flat)
        rank = pr.reshape(B, T * k).gather(1, flat)
        paths[:, :, l - 1] = tag
    # at padded positions the identity pointers repeat the last real tag; report 0 there instead
    paths = paths * mask.unsqueeze(1)
    return paths, best
