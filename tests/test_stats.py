import numpy as np
import pytest
from scipy import stats as sps

from naskd.stats import mean_std, paired_bootstrap


def test_paired_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.8).astype(float)
    b = np.where(rng.random(500) < 0.9, a, 1 - a)          # correlated with a
    ours = paired_bootstrap(a, b, n_boot=20000, seed=1)
    ref = sps.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False, n_resamples=20000,
                        method="percentile", random_state=2).confidence_interval
    assert ours["difference"] == pytest.approx(a.mean() - b.mean())
    assert ours["low"] == pytest.approx(ref.low, abs=0.006) and ours["high"] == pytest.approx(ref.high, abs=0.006)


def test_identical_and_clearly_different_models():
    a = np.r_[np.ones(300), np.zeros(100)]
    same = paired_bootstrap(a, a)
    assert same["low"] == same["high"] == 0 and not same["distinguishable"]
    better = paired_bootstrap(np.ones(400), a)
    assert better["distinguishable"] and better["low"] > 0.2
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:10])
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)


TAGS = ("O", "B-NP", "I-NP", "B-VP", "I-VP")


def _random_tagging(rng, n):
    gold = [[TAGS[t] for t in rng.integers(0, len(TAGS), size=rng.integers(1, 9))] for _ in range(n)]
    return gold, _noisy(gold, rng, 0.7)


def _noisy(gold, rng, keep):
    return [[t if rng.random() < keep else TAGS[rng.integers(0, len(TAGS))] for t in s] for s in gold]


def test_span_counts_sum_to_seqeval_scores():
    from seqeval.metrics import f1_score, precision_score, recall_score

    from naskd.stats import f1_from_counts, span_counts

    rng = np.random.default_rng(0)
    gold, pred = _random_tagging(rng, 60)
    c = span_counts(gold, pred).sum(0)
    assert c[1] > 0 and c[2] > 0
    assert abs(c[0] / c[1] - precision_score(gold, pred)) < 1e-12
    assert abs(c[0] / c[2] - recall_score(gold, pred)) < 1e-12
    assert abs(f1_from_counts(c) - f1_score(gold, pred)) < 1e-12
    with pytest.raises(ValueError, match="gold sentences"):
        span_counts(gold, pred[:3])


def test_paired_bootstrap_f1_against_seqeval_on_each_resample():
    """Every replicate recomputed by seqeval on the resampled sentence lists, with the same index draws."""
    from seqeval.metrics import f1_score

    from naskd.stats import paired_bootstrap_f1, span_counts

    rng = np.random.default_rng(1)
    gold, a = _random_tagging(rng, 40)
    b = _noisy(gold, np.random.default_rng(2), 0.5)
    n_boot = 60
    ours = paired_bootstrap_f1(span_counts(gold, a), span_counts(gold, b), n_boot=n_boot, seed=5)
    idx = np.random.default_rng(5).integers(0, 40, size=(n_boot, 40))
    ref = [f1_score([gold[i] for i in r], [a[i] for i in r]) - f1_score([gold[i] for i in r], [b[i] for i in r])
           for r in idx]
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert abs(ours["low"] - lo) < 1e-12 and abs(ours["high"] - hi) < 1e-12
    assert abs(ours["difference"] - (f1_score(gold, a) - f1_score(gold, b))) < 1e-12
    same = paired_bootstrap_f1(span_counts(gold, a), span_counts(gold, a), n_boot=200)
    assert same["difference"] == 0 and not same["distinguishable"]
    perfect = paired_bootstrap_f1(span_counts(gold, gold), span_counts(gold, a), n_boot=200)
    assert perfect["low"] > 0 and perfect["distinguishable"]
    with pytest.raises(ValueError, match="same N"):
        paired_bootstrap_f1(span_counts(gold, a), span_counts(gold[:5], a[:5]))


def _kendall_brute(x, y):
    """Kendall's tau-a by counting every pair (no ties in x or y, where tau-a = tau-b), in float64."""
    n = len(x)
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / (n * (n - 1) / 2)


def _spearman_brute(x, y):
    rx = np.argsort(np.argsort(x)).astype(np.float64)
    ry = np.argsort(np.argsort(y)).astype(np.float64)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_rank_correlation_against_brute_force():
    from naskd.stats import rank_correlation

    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    y = x + rng.normal(size=12)
    r = rank_correlation(x, y, n_boot=500, seed=1)
    assert r["n"] == 12
    assert r["kendall_tau"] == pytest.approx(_kendall_brute(x, y), abs=1e-12)
    assert r["spearman_rho"] == pytest.approx(_spearman_brute(x, y), abs=1e-12)
    for k in ("kendall", "spearman"):
        assert -1 <= r[f"{k}_low"] <= r[f"{k}_high"] <= 1
    assert r["kendall_low"] <= r["kendall_tau"] <= r["kendall_high"]
    assert rank_correlation(x, y, n_boot=500, seed=1) == r                     # seeded
    same = rank_correlation(x, 3 * x + 1, n_boot=200)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["kendall_low"] == pytest.approx(1.0)
    assert rank_correlation(x, -x, n_boot=200)["spearman_rho"] == pytest.approx(-1.0)


@pytest.mark.parametrize("x,y", [([1, 2], [1, 2]), ([1, 2, 3], [1, 2]), ([1, 2, float("nan")], [1, 2, 3])])
def test_rank_correlation_refuses_bad_input(x, y):
    from naskd.stats import rank_correlation

    with pytest.raises(ValueError):
        rank_correlation(x, y, n_boot=10)
