"""Shared suite over every registered criterion, the registry, and PKD's mapping."""
import numpy as np
import pytest
import torch

from naskd.data.tasks import get_task
from naskd.distill import CRITERIA, DistillationLoss, KDContext, default_pairs, parse_kd
from naskd.errors import ConfigError
from naskd.records import Progress
from naskd.teachers.cache import HiddenRequest

M_S, M_T, D_S, D_T, C = 3, 6, 8, 12, 2


class FakeTrainOutputs:
    def __init__(self, n=40):
        self.feats = np.random.default_rng(0).normal(size=(n, D_T)).astype(np.float32)

    def array(self, item):
        return self.feats


def ctx(**kw):
    base = dict(task=get_task("sst2"), student_layers=M_S, student_width=D_S, teacher_layers=M_T,
                teacher_width=D_T, fsd_memory=8)
    base.update(kw)
    return KDContext(**base)


def fake_batch(B=4, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, L - 2, 2, 3, L, 1][:B])
    mask = torch.arange(L)[None] < lengths[:, None]
    states = [torch.randn(B, L, D_S, generator=g).requires_grad_(True) for _ in range(M_S + 1)]
    student = {"logits": torch.randn(B, C, generator=g).requires_grad_(True), "states": states, "mask": mask}
    hidden = {}
    for layer in range(M_T + 1):
        hidden[HiddenRequest(layer, "cls")] = torch.randn(B, D_T, generator=g)
        hidden[HiddenRequest(layer, "mean")] = torch.randn(B, D_T, generator=g)
        hidden[HiddenRequest(layer, "tokens")] = torch.randn(B, L, D_T, generator=g) * mask[..., None]
    teacher = {"logits": torch.randn(B, C, generator=g), "hidden": hidden}
    batch = {"labels": torch.randint(0, C, (B,), generator=g)}
    return student, teacher, batch


T_TAGS, W = 5, 4


def tagging_ctx(**kw):
    g = torch.Generator().manual_seed(9)
    crf = {k: torch.randn(*s, generator=g) for k, s in (("start", (T_TAGS,)), ("end", (T_TAGS,)),
                                                        ("trans", (T_TAGS, T_TAGS)))}
    return ctx(task=get_task("conll2000"), teacher_crf=crf, **kw)


def fake_tagging_batch(B=4, L=5, seed=0):
    """Sentence fake plus per-word emissions (B, W, T), a word mask, a student CRF and tag labels."""
    from naskd.crf import CRF

    student, teacher, batch = fake_batch(B, L, seed)
    g = torch.Generator().manual_seed(seed + 50)
    n_words = torch.tensor([W, 2, 1, 3, W, 1][:B])
    word_mask = torch.arange(W)[None] < n_words[:, None]
    torch.manual_seed(seed)
    student.update(logits=torch.randn(B, W, T_TAGS, generator=g).requires_grad_(True), word_mask=word_mask,
                   crf=CRF(T_TAGS))
    teacher["logits"] = torch.randn(B, W, T_TAGS, generator=g) * word_mask[..., None]
    batch["labels"] = torch.randint(0, T_TAGS, (B, W), generator=g).masked_fill(~word_mask, -100)
    return student, teacher, batch


SUITE = [(n, "sentence") for n in sorted(CRITERIA) if CRITERIA[n].tasks in ("any", "sentence")] + \
        [(n, "tagging") for n in sorted(CRITERIA) if CRITERIA[n].tasks in ("any", "tagging")]


@pytest.mark.parametrize("name,kind", SUITE)
def test_every_criterion(name, kind):
    torch.manual_seed(0)
    make, fake = (ctx, fake_batch) if kind == "sentence" else (tagging_ctx, fake_tagging_batch)
    crit = CRITERIA[name](make())
    crit.setup(FakeTrainOutputs(), None)
    crit.progress = Progress(epoch=0, epochs=3, step=5, fraction=0.25)    # a structured one mixes KD and NLL
    student, teacher, batch = fake()
    loss = crit(student, teacher, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    touched = [t for t in [student["logits"], *student["states"]] if t.grad is not None and t.grad.abs().sum() > 0]
    assert touched, f"{name}: no gradient reached the student"
    # batch of one (fsd_local is undefined there and returns 0)
    s1, t1, b1 = fake(B=1)
    assert torch.isfinite(crit(s1, t1, b1))
    # padding values never matter
    s2, t2, b2 = fake()
    for st in s2["states"]:
        st.data[~s2["mask"]] = 1e3
    if kind == "tagging":
        s2["logits"].data[~s2["word_mask"]] = 1e3
        t2["logits"][~s2["word_mask"]] = -1e3
    torch.testing.assert_close(crit(s2, t2, b2), crit(*fake()), rtol=1e-5, atol=1e-5)


def test_criteria_refuse_the_wrong_task_kind():
    with pytest.raises(ConfigError, match="for the tagging task conll2000 use one of .*substructure"):
        CRITERIA["soft_ce"](tagging_ctx())
    with pytest.raises(ConfigError, match="sst2 is not a tagging task"):
        CRITERIA["kbest"](ctx())


def test_structured_schedules():
    crit = CRITERIA["substructure"](tagging_ctx())

    def lam(c, **kw):
        c.progress = Progress(**kw)
        return c.schedule()

    assert lam(crit, epoch=0, epochs=3) == 1.0 and lam(crit, epoch=2, epochs=3) == 0.0
    assert lam(crit, epoch=0, epochs=1) == 1.0
    kb = CRITERIA["kbest"](tagging_ctx())
    assert lam(kb, fraction=0.0) == 1.0 and lam(kb, fraction=0.75) == 0.25
    # lambda = 0: the criterion is the student's CRF likelihood alone; DistillationLoss hands progress down
    s, t, b = fake_tagging_batch()
    nll = s["crf"].nll(s["logits"], b["labels"], s["word_mask"])
    kb.progress = Progress(fraction=1.0)
    torch.testing.assert_close(kb(s, t, b), nll)
    loss = DistillationLoss("kbest=1", tagging_ctx())
    torch.testing.assert_close(loss(s, t, b, Progress(fraction=1.0))[0], nll)
    assert loss.criteria["kbest"].progress.fraction == 1.0
    loss(s, t, b)                                        # no progress given: the start of training
    assert loss.criteria["kbest"].progress == Progress()


def test_parse_kd():
    assert parse_kd("soft_ce=0.5,hard_ce=0.5,pkd=10") == [("soft_ce", 0.5), ("hard_ce", 0.5), ("pkd", 10.0)]
    assert parse_kd("logit_mse") == [("logit_mse", 1.0)]
    assert parse_kd({"pkd": 2}) == [("pkd", 2.0)]
    with pytest.raises(ConfigError, match="unknown distillation criterion 'sof_ce'; known: .*soft_ce"):
        parse_kd("sof_ce=1")
    with pytest.raises(ConfigError, match="not a number"):
        parse_kd("pkd=lots")
    with pytest.raises(ConfigError, match="twice"):
        parse_kd("pkd,pkd")


def test_pkd_mapping():
    assert default_pairs(3, 6) == [(1, 2), (2, 4)]
    assert default_pairs(4, 6) == [(1, 2), (2, 3), (3, 5)]  # round half up: 1.5 -> 2, 4.5 -> 5
    assert default_pairs(6, 6) == [(j, j) for j in range(1, 6)]
    # more student cells than teacher layers: cells share layers (brute force of the formula, half up)
    for m_s, m_t in ((8, 6), (6, 2), (5, 1), (2, 1)):
        want = [(j, int(j * m_t / m_s + 0.5)) for j in range(1, m_s)]
        assert default_pairs(m_s, m_t) == want
        assert all(0 <= t <= m_t for _, t in want)
    assert default_pairs(6, 2) == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    with pytest.raises(ConfigError, match="at least 1"):
        default_pairs(0, 6)
    crit = CRITERIA["pkd"](ctx(student_layers=8, pkd_pairs=[(1, 1), (8, 6)]))
    assert crit.pairs == [(1, 1), (8, 6)]
    with pytest.raises(ConfigError, match="outside"):
        CRITERIA["pkd"](ctx(pkd_pairs=[(1, 9)]))
    assert {r.layer for r in CRITERIA["pkd"](ctx()).teacher_requests()} == {2, 4}


def test_pkd_matches_functional_with_equal_widths():
    from naskd.distill import functional as Fn

    crit = CRITERIA["pkd"](ctx(student_width=D_T))
    student, teacher, batch = fake_batch()
    student["states"] = [torch.randn(4, 5, D_T) for _ in range(M_S + 1)]
    ref = Fn.pkd(torch.stack([student["states"][1][:, 0], student["states"][2][:, 0]], 1),
                 torch.stack([teacher["hidden"][HiddenRequest(2, "cls")], teacher["hidden"][HiddenRequest(4, "cls")]], 1))
    torch.testing.assert_close(crit(student, teacher, batch), ref)


def test_distillation_loss_combines_and_logs():
    loss = DistillationLoss("soft_ce=0.5,hard_ce=0.5,pkd=2", ctx())
    student, teacher, batch = fake_batch()
    total, logs = loss(student, teacher, batch)
    assert set(logs) == {"soft_ce", "hard_ce", "pkd"}
    assert total.item() == pytest.approx(0.5 * logs["soft_ce"] + 0.5 * logs["hard_ce"] + 2 * logs["pkd"], rel=1e-5)
    assert any(p.requires_grad for p in loss.parameters())  # the pkd projection trains
    assert {(r.layer, r.positions) for r in loss.teacher_requests()} == {(2, "cls"), (4, "cls")}


def test_hard_ce_skips_unlabelled():
    crit = CRITERIA["hard_ce"](ctx())
    student, teacher, batch = fake_batch()
    batch["has_label"] = torch.tensor([True, False, True, False])
    full = torch.nn.functional.cross_entropy(student["logits"][[0, 2]], batch["labels"][[0, 2]])
    torch.testing.assert_close(crit(student, teacher, batch), full)


def test_fsd_global_memory_shrinks_on_small_data():
    crit = CRITERIA["fsd_global"](ctx(fsd_memory=100))
    with pytest.warns(UserWarning, match="too few"):
        crit.setup(FakeTrainOutputs(40), None)
    assert crit.teacher_memory.shape == (10, D_T) and crit.student_memory.shape == (10, D_S)
    fresh = CRITERIA["fsd_global"](ctx(fsd_memory=100))
    fresh.load_state_dict(crit.state_dict())
    torch.testing.assert_close(fresh.teacher_memory, crit.teacher_memory)


def test_regression_forms():
    c = ctx(task=get_task("stsb"))
    s = {"logits": torch.tensor([1.0, 2.0]), "states": [], "mask": None}
    t = {"logits": torch.tensor([1.5, 2.0]), "hidden": {}}
    b = {"labels": torch.tensor([0.0, 2.0])}
    assert CRITERIA["hard_ce"](c)(s, t, b).item() == pytest.approx(0.5)
    assert CRITERIA["soft_ce"](c)(s, t, b).item() == pytest.approx(0.125)
    assert CRITERIA["logit_mse"](c)(s, t, b).item() == pytest.approx(0.125)
