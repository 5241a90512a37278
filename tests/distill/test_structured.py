"""Structured KD criteria for CRF taggers against enumeration in float64."""
import itertools

import torch

from naskd.crf import CRF
from naskd.distill import functional as Fn


def _crf(T, seed):
    g = torch.Generator().manual_seed(seed)
    crf = CRF(T).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return crf


def _case(B=3, W=4, T=3, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    s, t = _crf(T, seed).requires_grad_(False), _crf(T, seed + 1).requires_grad_(False)
    es = torch.randn(B, W, T, generator=g, dtype=torch.float64)
    et = torch.randn(B, W, T, generator=g, dtype=torch.float64)
    mask = torch.arange(W)[None] < torch.tensor([4, 2, 1][:B])[:, None]
    return s, t, es, et, mask


def _logp_table(crf, em, n):
    """{path: log p(path)} of one sentence by enumeration."""
    T = em.size(-1)
    paths = list(itertools.product(range(T), repeat=n))
    tags = torch.tensor(paths).view(len(paths), n)
    mask = torch.ones(len(paths), n, dtype=torch.bool)
    scores = crf.score(em[:n].unsqueeze(0).expand(len(paths), n, T), tags, mask)
    return dict(zip(paths, scores - torch.logsumexp(scores, 0)))


def test_substructure_l2_against_loops():
    s, t, es, et, mask = _case()
    ss, st = s.substructure_scores(es), t.substructure_scores(et)
    total, count = 0.0, 0
    T = es.size(-1)
    for b in range(es.size(0)):
        for l in range(int(mask[b].sum())):
            for i in range(T):
                for j in range(T):
                    a = (s.start[j] + es[b, 0, j]) if l == 0 else (s.trans[i, j] + es[b, l, j])
                    c = (t.start[j] + et[b, 0, j]) if l == 0 else (t.trans[i, j] + et[b, l, j])
                    total += float((a - c) ** 2)
                    count += 1
    assert abs(float(Fn.substructure_l2(ss, st, mask)) - total / count) < 1e-9
    # padding does not matter
    ss2 = ss.clone()
    ss2[~mask] = 1e3
    assert float(Fn.substructure_l2(ss2, st, mask)) == float(Fn.substructure_l2(ss, st, mask))
    assert float(Fn.substructure_l2(ss, ss, mask)) == 0.0
    e = Fn.substructure_emission(es, et, mask)
    want = sum(float(((es[b, l] - et[b, l]) ** 2).sum()) for b in range(3) for l in range(int(mask[b].sum())))
    assert abs(float(e) - want / (int(mask.sum()) * T)) < 1e-9


def test_struct_kd_is_the_exact_cross_entropy():
    s, t, es, et, mask = _case()
    pu, pp = t.marginals(et, mask)
    got = Fn.struct_kd(es, mask, s.start, s.end, s.trans, pu, pp)
    want = 0.0
    for b in range(es.size(0)):
        n = int(mask[b].sum())
        lp_s, lp_t = _logp_table(s, es[b], n), _logp_table(t, et[b], n)
        want += -sum(float(torch.exp(lp_t[y]) * lp_s[y]) for y in lp_s)
    assert abs(float(got) - want / es.size(0)) < 1e-8


def test_kbest_kd_against_enumeration():
    s, t, es, et, mask = _case()
    k = 3
    paths, scores = t.kbest(et, mask, k)
    got = Fn.kbest_kd(es, mask, s.start, s.end, s.trans, paths, scores)
    want = 0.0
    for b in range(es.size(0)):
        n = int(mask[b].sum())
        lp_t, lp_s = _logp_table(t, et[b], n), _logp_table(s, es[b], n)
        top = sorted(lp_t, key=lambda y: -float(lp_t[y]))[:k]
        z = sum(float(torch.exp(lp_t[y])) for y in top)
        want += -sum(float(torch.exp(lp_t[y])) / z * float(lp_s[y]) for y in top)
    assert abs(float(got) - want / es.size(0)) < 1e-8


def test_structured_criteria_gradients_reduce_them():
    s, t, es, et, mask = _case()
    pu, pp = t.marginals(et, mask)
    paths, scores = t.kbest(et, mask, 3)
    ss_t = t.substructure_scores(et).detach()
    for f in (lambda e: Fn.substructure_l2(s.substructure_scores(e), ss_t, mask),
              lambda e: Fn.struct_kd(e, mask, s.start, s.end, s.trans, pu.detach(), pp.detach()),
              lambda e: Fn.kbest_kd(e, mask, s.start, s.end, s.trans, paths, scores.detach())):
        e = es.clone().requires_grad_(True)
        v = f(e)
        (g,) = torch.autograd.grad(v, e)
        assert g.abs().sum() > 0 and g[~mask].abs().sum() == 0
        assert float(f((e - 1e-3 * g).detach())) < float(v)
