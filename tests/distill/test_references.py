"""Issue 22: CKA numerics, FSD's intra aggregation, the mini-batch CKA estimator and the poster's L_ii,
each against an independent float64 reference or a published value."""
import numpy as np
import pytest
import torch

from naskd.analysis import batch_cka
from naskd.distill import CRITERIA, KDContext
from naskd.distill import functional as Fn
from naskd.data.tasks import get_task
from naskd.errors import NaskdError
from naskd.teachers.cache import HiddenRequest


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


def t32(a):
    return torch.tensor(a, dtype=torch.float32)


def np_cka(x, y):
    """Kornblith et al. 2019 with an explicit centring matrix, float64."""
    n = len(x)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ H @ b @ H)  # noqa: E731
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def np_cka_features(x, y):
    """The same in feature space (Kornblith et al.'s demo: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)), for large n."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def np_hsic1(x, y):
    """Song et al. 2012's unbiased HSIC written out on the raw (uncentred) Gram matrices, float64."""
    n = len(x)
    K, L = x @ x.T, y @ y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))


def kornblith_demo_data():
    # the tutorial data of Kornblith et al.'s demo notebook (google-research representation_similarity)
    rs = np.random.RandomState(1337)
    X = rs.randn(100, 10)
    Y = rs.randn(100, 10) + X
    return X, Y


# ------------------------------------------------------------------ 1. CKA numerics

def test_cka_reproduces_kornblith_demo_values():
    X, Y = kornblith_demo_data()
    # published in the demo notebook: linear CKA 0.55761, debiased (unbiased HSIC) 0.51346
    assert Fn.cka(t64(X), t64(Y)).item() == pytest.approx(0.55761, abs=5e-6)
    assert Fn.cka(t32(X), t32(Y)).item() == pytest.approx(0.55761, abs=5e-6)
    assert Fn.minibatch_cka([(t64(X), t64(Y))]).item() == pytest.approx(0.51346, abs=5e-6)


@pytest.mark.parametrize("n,d1,d2", [(12, 6, 9), (300, 5, 7)])   # Gram (n <= d1 + d2) and feature paths
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scale_in_float32(n, d1, d2):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d1)) + 2.0
    y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))
    ref = np_cka(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(d2, d2)))
    assert Fn.cka(t32(x), t32(y @ q)).item() == pytest.approx(ref, abs=1e-5)
    assert Fn.cka(t64(x), t64(y)).item() == pytest.approx(ref, rel=1e-10)
    for s in [1e-30, 1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6, 1e30]:
        got = Fn.cka(t32(s * x), t32(s * y))
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref, abs=1e-5), s
        assert Fn.cka(t32(s * x), t32(y)).item() == pytest.approx(ref, abs=1e-5), s   # one side scaled


@pytest.mark.parametrize("n,d1,d2", [(10, 6, 8), (64, 3, 4)])
def test_cka_gradient_is_exact_and_finite_at_any_scale(n, d1, d2):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(n, d1)), rng.normal(size=(n, d2)) + 0.5 * rng.normal(size=(n, 1))

    # float64 reference gradient: autograd through the textbook formula (explicit H, no normalisation)
    xr = t64(x).requires_grad_(True)
    H = torch.eye(n, dtype=torch.float64) - 1.0 / n
    K, L = H @ xr @ xr.T @ H, H @ t64(y) @ t64(y).T @ H
    ((K * L).sum() / torch.sqrt((K * K).sum() * (L * L).sum())).backward()
    ref = xr.grad.numpy()
    assert np.abs(ref).max() > 1e-3

    for s in [1e-6, 1.0, 1e3, 1e4, 1e6]:
        xs = t32(s * x).requires_grad_(True)
        Fn.cka(xs, t32(s * y)).backward()
        g = xs.grad.numpy().astype(np.float64)
        assert np.isfinite(g).all(), s
        # d CKA(sx)/d(sx) = grad(x) / s
        np.testing.assert_allclose(g * s, ref, rtol=2e-3, atol=2e-6 * np.abs(ref).max())


def test_fsd_local_keeps_its_value_and_gradient_for_large_feature_std():
    g = torch.Generator().manual_seed(0)
    B, L, D = 16, 32, 64
    t = torch.randn(B, L, D, generator=g)
    s = t + torch.randn(B, L, D, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    values, grads = [], []
    for std in [1.0, 300.0, 1000.0, 1e5]:
        st = (s * std).requires_grad_(True)
        loss = Fn.fsd_local(st, t * std, mask)
        loss.backward()
        values.append(loss.item())
        grads.append(st.grad.norm().item() * std)
    # before issue 22: 0.0035 up to std 300, then the constant -log(1e-8) = 18.42 with zero gradient
    assert values[0] < 0.1
    assert values == pytest.approx([values[0]] * 4, rel=1e-3)
    assert grads[0] > 0 and grads == pytest.approx([grads[0]] * 4, rel=1e-3)


def test_cka_undefined_cases_are_zero_with_zero_gradient_and_shapes_checked():
    x = torch.ones(5, 3, requires_grad=True)            # no variance: CKA undefined
    v = Fn.cka(x, torch.randn(5, 4))
    v.backward()
    assert v.item() == 0.0 and torch.equal(x.grad, torch.zeros(5, 3))
    assert Fn.cka(torch.randn(1, 3), torch.randn(1, 2)).item() == 0.0
    with pytest.raises(ValueError, match="same n"):
        Fn.cka(torch.randn(5, 3), torch.randn(4, 3))
    assert Fn.cka(torch.randn(6, 3, dtype=torch.bfloat16), torch.randn(6, 2, dtype=torch.bfloat16)).dtype \
        == torch.float32


# ------------------------------------------------------------------ 2. FSD's intra aggregation

def test_fsd_intra_follows_jung_et_al_by_default():
    rng = np.random.default_rng(5)
    B, L, Ds, Dt = 4, 5, 3, 4
    s, t = rng.normal(size=(B, L, Ds)), rng.normal(size=(B, L, Dt))
    t[:, :, 0] += 0.8 * s[:, :, 0]
    lengths = [5, 4, 1, 3]                              # the 1-token sentence is left out
    mask = np.arange(L)[None] < np.array(lengths)[:, None]
    # brute force, float64: Jung et al.'s linear_CKA_loss with H K H centring per sentence, the mean of the
    # per-sentence |CKA| inside the log
    per = []
    for b in range(B):
        n = lengths[b]
        if n < 2:
            continue
        H = np.eye(n) - np.ones((n, n)) / n
        K, Lm = H @ s[b, :n] @ s[b, :n].T @ H, H @ t[b, :n] @ t[b, :n].T @ H
        per.append(abs(np.trace(K @ Lm) / (np.sqrt(np.trace(K @ K)) * np.sqrt(np.trace(Lm @ Lm)))))
    per = np.array(per)
    source = -np.log(per.mean() + 1e-8)
    old = np.mean(-np.log(per + 1e-8))
    m = torch.tensor(mask)
    assert Fn.fsd_intra(t64(s), t64(t), m).item() == pytest.approx(source, rel=1e-10)
    assert Fn.fsd_intra(t64(s), t64(t), m, aggregate="log_mean").item() == pytest.approx(source, rel=1e-10)
    assert Fn.fsd_intra(t64(s), t64(t), m, aggregate="mean_log").item() == pytest.approx(old, rel=1e-10)
    assert abs(source - old) > 1e-3                      # the two aggregations do differ on this batch
    crit = CRITERIA["fsd_intra"](KDContext(task=get_task("sst2"), student_layers=2, student_width=Ds,
                                           teacher_layers=3, teacher_width=Dt))
    student = {"states": [None, t64(s), None], "mask": m}
    teacher = {"hidden": {HiddenRequest(2, "tokens"): t64(t)}}
    assert crit(student, teacher, {}).item() == pytest.approx(source, rel=1e-10)
    with pytest.raises(ValueError, match="aggregate"):
        Fn.fsd_intra(t64(s), t64(t), m, aggregate="mean")


# ------------------------------------------------------------------ 3. the mini-batch CKA estimator

def test_hsic_unbiased_matches_song_et_al_brute_force():
    rng = np.random.default_rng(6)
    for n in (4, 5, 9):
        x = rng.normal(size=(n, 3)) * 2 + 7               # uncentred: the estimator is shift invariant
        y = rng.normal(size=(n, 5)) - 3
        y[:, 0] += x[:, 1]
        assert Fn.hsic_unbiased(t64(x), t64(y)).item() == pytest.approx(np_hsic1(x, y), rel=1e-9, abs=1e-12)
        assert Fn.hsic_unbiased(t32(x), t32(y)).dtype == torch.float64
    with pytest.raises(ValueError, match="at least 4"):
        Fn.hsic_unbiased(torch.randn(3, 2), torch.randn(3, 2))


def synthetic(N, a=4, b=12, c=4, seed=7):
    """x = [u, v], y = [u, w] with u, v, w independent standard normal (a, b, c dims): the population
    linear HSIC(x, y) = ||Cov(x, y)||_F^2 = a and CKA = a / sqrt((a + b)(a + c))."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(N, a))
    x = np.concatenate([u, rng.normal(size=(N, b))], 1)
    y = np.concatenate([u, rng.normal(size=(N, c))], 1) @ np.linalg.qr(rng.normal(size=(a + c, a + c)))[0]
    return x, y, a / np.sqrt((a + b) * (a + c))


def test_unbiased_hsic_averages_to_the_population_value():
    x, y, _ = synthetic(32 * 500)
    vals = [Fn.hsic_unbiased(t64(x[i:i + 32]), t64(y[i:i + 32])).item() for i in range(0, len(x), 32)]
    assert np.mean(vals) == pytest.approx(4.0, abs=0.15)   # population HSIC = a = 4; SE ~ 0.05


def test_minibatch_cka_approaches_the_full_data_value_and_the_batch_mean_does_not():
    bs = 32
    x, y, population = synthetic(bs * 400)
    full = np_cka_features(x, y)
    assert full == pytest.approx(population, abs=0.01)     # 0.3536 for a, b, c = 4, 12, 4
    batches = [(t64(x[i:i + bs]), t64(y[i:i + bs])) for i in range(0, len(x), bs)]
    errors = {k: abs(Fn.minibatch_cka(batches[:k]).item() - full) for k in (4, 400)}
    assert errors[400] < 0.01
    assert errors[400] < errors[4]
    per_batch_mean = np.mean([Fn.cka(a, b).item() for a, b in batches])
    assert per_batch_mean - full > 0.1                      # the estimator naskd analyze used before
    # the analysis path reports the same numbers (40 batches and 10 spare rows: its matrix is 40 x 40)
    n = bs * 40 + 10
    res = batch_cka(x[:n].astype(np.float32), y[:n].astype(np.float32), bs)
    assert res["batches"] == 40 and res["examples_used"] == bs * 40
    assert res["minibatch_cka"] == pytest.approx(Fn.minibatch_cka(batches[:40]).item(), abs=1e-5)
    assert res["full_cka"] == pytest.approx(np_cka_features(x[:bs * 40], y[:bs * 40]), abs=1e-5)
    assert res["diagonal_mean"] == pytest.approx(np.mean([Fn.cka(a, b).item() for a, b in batches[:40]]), abs=1e-5)
    assert np.asarray(res["matrix"]).shape == (40, 40)


def test_batch_cka_rejects_bad_input():
    x = np.zeros((20, 3))
    with pytest.raises(NaskdError, match="at least 4"):
        batch_cka(x, x, 3)
    with pytest.raises(NaskdError, match="too few"):
        batch_cka(x, x, 32)
    with pytest.raises(NaskdError, match="paired"):
        batch_cka(x, x[:10], 4)


# ------------------------------------------------------------------ 4. the poster's L_ii

def test_pkd_sqnorm_matches_a_float64_hand_computation():
    rng = np.random.default_rng(8)
    B, J, D = 3, 2, 4
    s, t = rng.normal(size=(B, J, D)) * 3, rng.normal(size=(B, J, D)) * 0.5
    ref = 0.0
    for j in range(J):
        per_example = []
        for b in range(B):
            a = s[b, j] / np.dot(s[b, j], s[b, j])
            c = t[b, j] / np.dot(t[b, j], t[b, j])
            per_example.append(np.sum((a - c) ** 2))
        ref += np.mean(per_example)
    assert Fn.pkd(t64(s), t64(t), norm="sq_l2").item() == pytest.approx(ref, rel=1e-6)
    assert Fn.pkd(t64(s), t64(t), norm="sq_l2").item() != pytest.approx(Fn.pkd(t64(s), t64(t)).item(), rel=0.1)
    # not scale invariant: scaling both sides by c divides the loss by c^2 (the default form is unchanged)
    assert Fn.pkd(t64(10 * s), t64(10 * t), norm="sq_l2").item() == pytest.approx(ref / 100, rel=1e-6)
    assert Fn.pkd(t64(10 * s), t64(10 * t)).item() == pytest.approx(Fn.pkd(t64(s), t64(t)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="norm"):
        Fn.pkd(t64(s), t64(t), norm="l1")


def test_pkd_sqnorm_criterion_uses_the_poster_form():
    D = 6
    ctx = KDContext(task=get_task("sst2"), student_layers=3, student_width=D, teacher_layers=6, teacher_width=D)
    crit, plain = CRITERIA["pkd_sqnorm"](ctx), CRITERIA["pkd"](ctx)
    assert crit.pairs == plain.pairs == [(1, 2), (2, 4)]
    g = torch.Generator().manual_seed(0)
    states = [torch.randn(4, 5, D, generator=g) for _ in range(4)]
    hidden = {HiddenRequest(layer, "cls"): torch.randn(4, D, generator=g) for layer in (2, 4)}
    s = torch.stack([states[1][:, 0], states[2][:, 0]], 1)
    t = torch.stack([hidden[HiddenRequest(2, "cls")], hidden[HiddenRequest(4, "cls")]], 1)
    got = crit({"states": states, "logits": torch.zeros(4, 2)}, {"hidden": hidden}, {})
    assert got.item() == pytest.approx(Fn.pkd(s, t, norm="sq_l2").item(), rel=1e-6)
    assert got.item() != pytest.approx(plain({"states": states, "logits": torch.zeros(4, 2)},
                                             {"hidden": hidden}, {}).item(), rel=0.1)


def test_cka_runs_in_full_precision_under_bf16_autocast():
    # training under autocast (darts on cuda) would otherwise take the Gram products in bfloat16 (~3 digits)
    X, Y = kornblith_demo_data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = Fn.cka(t32(X), t32(Y))
        lossy = torch.mm(t32(X), t32(X).T)
    assert lossy.dtype == torch.bfloat16                  # autocast is on for plain matmuls here
    assert got.dtype == torch.float32 and got.item() == pytest.approx(0.55761, abs=5e-6)
