"""Paired comparisons of two models on the same evaluation examples."""
from __future__ import annotations

import numpy as np


def paired_bootstrap(score_a, score_b, *, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap of mean(score_a) - mean(score_b) over examples resampled in pairs.

    score_a, score_b: per-example scores of the same N examples (1/0 correctness for accuracy). Returns the
    observed difference and the ``level`` interval; "distinguishable" when the interval excludes 0."""
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores must be two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": float(d.mean()), "low": float(lo), "high": float(hi), "level": level,
            "distinguishable": bool(lo > 0 or hi < 0)}


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def span_counts(gold: list[list[str]], pred: list[list[str]]) -> np.ndarray:
    """Per sentence: (correct spans, predicted spans, gold spans), with spans as conlleval reads IOB tags
    (seqeval's default mode). Summed over sentences they give the corpus precision, recall and F1."""
    from seqeval.metrics.sequence_labeling import get_entities

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    rows = []
    for g, p in zip(gold, pred):
        gs, ps = set(get_entities(list(g))), set(get_entities(list(p)))
        rows.append((len(gs & ps), len(ps), len(gs)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def f1_from_counts(counts) -> np.ndarray:
    """Span F1 from summed (correct, predicted, gold) counts; ``counts`` (..., 3); 0 where there is no span."""
    c = np.asarray(counts, dtype=np.float64)
    denom = c[..., 1] + c[..., 2]
    return np.where(denom > 0, 2 * c[..., 0] / np.maximum(denom, 1), 0.0)


def paired_bootstrap_f1(counts_a, counts_b, *, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap of F1(a) - F1(b), sentences resampled in pairs and the corpus F1 recomputed from
    the resampled span counts (F1 is not a mean over sentences, so paired_bootstrap does not apply).

    counts_a, counts_b: (N, 3) per-sentence (correct, predicted, gold) from :func:`span_counts` (several seeds
    may be summed per sentence)."""
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ValueError(f"paired span counts must be two (N, 3) arrays of the same N, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for lo in range(0, n_boot, 500):                  # chunks keep the (chunk, N) index matrix small
        idx = rng.integers(0, len(a), size=(min(500, n_boot - lo), len(a)))
        diffs[lo:lo + len(idx)] = f1_from_counts(a[idx].sum(1)) - f1_from_counts(b[idx].sum(1))
    low, high = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": float(f1_from_counts(a.sum(0)) - f1_from_counts(b.sum(0))), "low": float(low),
            "high": float(high), "level": level, "distinguishable": bool(low > 0 or high < 0)}
