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


def rank_correlation(proxy, truth, *, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """How well ``proxy`` ranks items the way ``truth`` does: Kendall's tau-b and Spearman's rho
    (scipy.stats.kendalltau, scipy.stats.spearmanr), each with a percentile bootstrap interval over the items
    resampled in pairs (scipy.stats.bootstrap, paired). proxy, truth: 1-D, one value per item (N >= 3), higher
    meaning better in both (negate a cost such as a latency first). Returns {"n", "kendall_tau",
    "kendall_low", "kendall_high", "spearman_rho", "spearman_low", "spearman_high", "level"}; a resample whose
    proxy or truth is constant has no correlation and counts as 0."""
    from scipy import stats

    x = np.asarray(proxy, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"rank correlation needs two 1-D arrays of the same length, at least 3, got {x.shape} "
                         f"and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rank correlation of values that are not finite")

    def tau(a, b, axis=-1):
        return np.apply_along_axis(lambda r: _nan0(stats.kendalltau(r[: len(r) // 2], r[len(r) // 2:])[0]),
                                   axis, np.concatenate([a, b], axis=axis))

    def rho(a, b, axis=-1):
        return np.apply_along_axis(lambda r: _nan0(stats.spearmanr(r[: len(r) // 2], r[len(r) // 2:])[0]),
                                   axis, np.concatenate([a, b], axis=axis))

    import warnings

    out = {"n": int(len(x)), "level": level}
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():          # scipy warns on each constant resample (counted as 0)
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        out.update(_correlations(x, y, tau, rho, n_boot, level, rng))
    return out


def _correlations(x, y, tau, rho, n_boot, level, rng) -> dict:
    from scipy import stats

    out = {}
    for name, fn, point in (("kendall", tau, stats.kendalltau(x, y)[0]), ("spearman", rho, stats.spearmanr(x, y)[0])):
        res = stats.bootstrap((x, y), fn, paired=True, vectorized=True, n_resamples=n_boot, confidence_level=level,
                              method="percentile", random_state=rng)
        key = "kendall_tau" if name == "kendall" else "spearman_rho"
        out.update({key: _nan0(point), f"{name}_low": float(res.confidence_interval.low),
                    f"{name}_high": float(res.confidence_interval.high)})
    return out


def _nan0(v) -> float:
    v = float(v)
    return 0.0 if np.isnan(v) else v
