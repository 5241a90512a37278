"""Criteria against independent float64 references (numpy, explicit centring matrices)."""
import numpy as np
import pytest
import torch

from naskd.distill import functional as Fn

rng = np.random.default_rng(0)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_cka(x, y):
    n = len(x)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ H @ b @ H) / (n - 1) ** 2  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_soft_ce_reference():
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    T = 2.5
    ref = -(np_softmax(t / T) * np.log(np_softmax(s / T))).sum(-1).mean() * T ** 2
    assert Fn.soft_ce(t64(s), t64(t), T).item() == pytest.approx(ref, rel=1e-6)


def test_logit_mse_reference():
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    assert Fn.logit_mse(t64(s), t64(t)).item() == pytest.approx(((s - t) ** 2).sum(-1).mean(), rel=1e-6)
    assert Fn.logit_mse(t64(s[:, 0]), t64(t[:, 0])).item() == pytest.approx(((s[:, 0] - t[:, 0]) ** 2).mean())


def test_pkd_reference():
    s, t = rng.normal(size=(4, 3, 6)), rng.normal(size=(4, 3, 6))
    ns = s / np.linalg.norm(s, axis=-1, keepdims=True)
    nt = t / np.linalg.norm(t, axis=-1, keepdims=True)
    ref = sum(np.mean(np.sum((ns[:, j] - nt[:, j]) ** 2, -1)) for j in range(3))
    assert Fn.pkd(t64(s), t64(t)).item() == pytest.approx(ref, rel=1e-6)


def test_cka_reference_and_properties():
    x, y = rng.normal(size=(9, 5)), rng.normal(size=(9, 7))
    assert Fn.cka(t64(x), t64(y)).item() == pytest.approx(np_cka(x, y), rel=1e-6)
    assert Fn.cka(t64(x), t64(x)).item() == pytest.approx(1.0, abs=1e-6)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    base = Fn.cka(t64(x), t64(y)).item()
    assert Fn.cka(t64(x), t64(y @ q)).item() == pytest.approx(base, rel=1e-6)     # orthogonal
    assert Fn.cka(t64(3.7 * x), t64(y)).item() == pytest.approx(base, rel=1e-6)    # isotropic scale
    for _ in range(20):
        a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
        v = Fn.cka(t64(a), t64(b)).item()
        assert 0.0 <= v <= 1.0


def test_fsd_intra_reference_and_padding():
    B, L, Ds, Dt = 3, 6, 4, 5
    s, t = rng.normal(size=(B, L, Ds)), rng.normal(size=(B, L, Dt))
    lengths = [6, 4, 1]
    mask = np.arange(L)[None] < np.array(lengths)[:, None]
    per = np.array([np_cka(s[b, :lengths[b]], t[b, :lengths[b]]) for b in range(2)])
    ref = -np.log(per.mean() + 1e-8)                     # Jung et al.'s code: -log of the mean CKA
    ref_mean_log = np.mean(-np.log(per + 1e-8))          # the documented alternative
    got = Fn.fsd_intra(t64(s), t64(t), torch.tensor(mask))
    assert got.item() == pytest.approx(ref, rel=1e-6)
    s2, t2 = s.copy(), t.copy()
    s2[~mask] = 99.0
    t2[~mask] = -7.0
    assert Fn.fsd_intra(t64(s2), t64(t2), torch.tensor(mask)).item() == pytest.approx(ref, rel=1e-6)
    assert Fn.fsd_intra(t64(s2), t64(t2), torch.tensor(mask), aggregate="mean_log").item() == \
        pytest.approx(ref_mean_log, rel=1e-6)


def test_fsd_local_reference_and_padding():
    B, L = 5, 4
    s, t = rng.normal(size=(B, L, 3)), rng.normal(size=(B, L, 6))
    mask = np.arange(L)[None] < np.array([4, 3, 2, 4, 1])[:, None]
    sm, tm = s * mask[..., None], t * mask[..., None]
    ref = -np.log(np_cka(sm.reshape(B, -1), tm.reshape(B, -1)) + 1e-8)
    assert Fn.fsd_local(t64(s), t64(t), torch.tensor(mask)).item() == pytest.approx(ref, rel=1e-6)
    s[~mask] = 123.0
    assert Fn.fsd_local(t64(s), t64(t), torch.tensor(mask)).item() == pytest.approx(ref, rel=1e-6)


def test_fsd_global_reference():
    B, K = 6, 4
    fs, ft = rng.normal(size=(B, 3)), rng.normal(size=(B, 5))
    ms, mt = rng.normal(size=(K, 3)), rng.normal(size=(K, 5))
    beta = 0.3
    dist = lambda f, m: np.sqrt(((f[:, None] - m[None]) ** 2).sum(-1))  # noqa: E731
    cos = lambda f, m: (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (m / np.linalg.norm(m, axis=1, keepdims=True)).T  # noqa: E731,E501
    ref = (-np.log(np_cka(ms, mt) + 1e-8) + beta * np.mean((dist(fs, ms) - dist(ft, mt)) ** 2)
           + (1 - beta) * np.mean((cos(fs, ms) - cos(ft, mt)) ** 2))
    got = Fn.fsd_global(t64(fs), t64(ft), t64(ms), t64(mt), beta)
    assert got.item() == pytest.approx(ref, rel=1e-6)


def test_distance_criteria_vanish_at_equality_and_descend():
    x = rng.normal(size=(4, 5, 6))
    mask = torch.ones(4, 5, dtype=torch.bool)
    cases = {
        "logit_mse": lambda a, b: Fn.logit_mse(a[:, 0], b[:, 0]),
        "pkd": lambda a, b: Fn.pkd(a, b),
        "fsd_intra": lambda a, b: Fn.fsd_intra(a, b, mask),
        "fsd_local": lambda a, b: Fn.fsd_local(a, b, mask),
        "cka_loss": lambda a, b: Fn.cka_loss(a.flatten(1), b.flatten(1)),
    }
    for name, f in cases.items():
        assert f(t64(x), t64(x)).item() == pytest.approx(0.0, abs=1e-6), name
        s = t64(x + rng.normal(size=x.shape)).requires_grad_(True)
        before = f(s, t64(x))
        before.backward()
        with torch.no_grad():
            after = f(s - 1e-3 * s.grad, t64(x))
        assert after.item() < before.item(), name


def test_undefined_cases_are_zero_not_nan():
    one = torch.randn(1, 3, 4)
    assert Fn.fsd_local(one, one, torch.ones(1, 3, dtype=torch.bool)).item() == 0.0
    assert Fn.fsd_intra(one, one, torch.tensor([[True, False, False]])).item() == 0.0
