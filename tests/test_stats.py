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
