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
