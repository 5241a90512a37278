"""The CRF against brute-force enumeration (float64, length <= 5, <= 4 tags) and against pytorch-crf."""
import itertools

import pytest
import torch

from naskd.crf import CRF


def _setup(B=4, W=5, T=4, seed=0, lengths=(5, 3, 1, 4)):
    g = torch.Generator().manual_seed(seed)
    crf = CRF(T).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    crf.requires_grad_(False)
    em = torch.randn(B, W, T, generator=g, dtype=torch.float64)
    mask = torch.arange(W)[None] < torch.tensor(lengths[:B])[:, None]
    return crf, em, mask


def _paths(crf, em_b, n):
    """All (path, score) of one sentence of length n, by enumeration."""
    T = em_b.size(-1)
    out = []
    for path in itertools.product(range(T), repeat=n):
        s = crf.start[path[0]] + em_b[0, path[0]] + crf.end[path[-1]]
        for l in range(1, n):
            s = s + crf.trans[path[l - 1], path[l]] + em_b[l, path[l]]
        out.append((path, s))
    return out


def test_log_partition_score_and_viterbi_against_enumeration():
    crf, em, mask = _setup()
    log_z = crf.log_partition(em, mask)
    tags, best = crf.viterbi(em, mask)
    for b in range(em.size(0)):
        n = int(mask[b].sum())
        paths = _paths(crf, em[b], n)
        scores = torch.stack([s for _, s in paths])
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0))
        i = int(scores.argmax())
        assert tuple(tags[b, :n].tolist()) == paths[i][0] and tags[b, n:].eq(0).all()
        torch.testing.assert_close(best[b], scores[i])
        # score() of an arbitrary path, garbage tags at padding
        path = paths[len(paths) // 3][0]
        t = torch.full((1, em.size(1)), -100)
        t[0, :n] = torch.tensor(path)
        torch.testing.assert_close(crf.score(em[b:b + 1], t, mask[b:b + 1])[0], paths[len(paths) // 3][1])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_kbest_against_enumeration(k):
    crf, em, mask = _setup(T=3)
    tags, scores = crf.kbest(em, mask, k)
    for b in range(em.size(0)):
        n = int(mask[b].sum())
        ranked = sorted(_paths(crf, em[b], n), key=lambda ps: -float(ps[1]))
        for r in range(k):
            if r < len(ranked):
                torch.testing.assert_close(scores[b, r], ranked[r][1])
                # the r-th path scores what the enumeration's r-th does (ties may swap paths)
                t = tags[b, r:r + 1]
                torch.testing.assert_close(crf.score(em[b:b + 1], t, mask[b:b + 1])[0], ranked[r][1])
            else:
                assert scores[b, r] == float("-inf")          # length 1 with 3 tags has 3 paths
        got = {tuple(tags[b, r, :n].tolist()) for r in range(min(k, len(ranked)))}
        assert len(got) == min(k, len(ranked))                # distinct paths


def test_marginals_against_enumeration():
    crf, em, mask = _setup()
    unary, pair = crf.marginals(em, mask)
    T = em.size(-1)
    for b in range(em.size(0)):
        n = int(mask[b].sum())
        paths = _paths(crf, em[b], n)
        log_z = torch.logsumexp(torch.stack([s for _, s in paths]), 0)
        u = torch.zeros(n, T, dtype=torch.float64)
        p = torch.zeros(n, T, T, dtype=torch.float64)
        for path, s in paths:
            w = torch.exp(s - log_z)
            for l in range(n):
                u[l, path[l]] += w
                if l:
                    p[l, path[l - 1], path[l]] += w
        torch.testing.assert_close(unary[b, :n], u)
        torch.testing.assert_close(pair[b, :n], p)
        assert unary[b, n:].eq(0).all() and pair[b, n:].eq(0).all() and pair[b, 0].eq(0).all()


def test_log_likelihood_matches_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    g = torch.Generator().manual_seed(3)
    B, W, T = 6, 9, 7
    ref = torchcrf.CRF(T, batch_first=True)
    ours = CRF(T)
    with torch.no_grad():
        ours.start.copy_(ref.start_transitions)
        ours.end.copy_(ref.end_transitions)
        ours.trans.copy_(ref.transitions)
    em = torch.randn(B, W, T, generator=g)
    lengths = torch.tensor([9, 1, 4, 7, 2, 9])
    mask = torch.arange(W)[None] < lengths[:, None]
    tags = torch.randint(0, T, (B, W), generator=g)
    want = ref(em, tags, mask.to(torch.uint8), reduction="none")
    torch.testing.assert_close(ours.log_likelihood(em, tags, mask), want, rtol=1e-5, atol=1e-4)
    assert [p[: int(n)] for p, n in zip(ours.viterbi(em, mask)[0].tolist(), lengths)] == ref.decode(em, mask.to(torch.uint8))


def test_substructure_scores_sum_to_path_scores():
    crf, em, mask = _setup()
    s = crf.substructure_scores(em)                           # (B, W, T, T)
    tags = torch.randint(0, em.size(-1), mask.shape)
    for b in range(em.size(0)):
        n = int(mask[b].sum())
        total = s[b, 0, 0, tags[b, 0]] + sum(s[b, l, tags[b, l - 1], tags[b, l]] for l in range(1, n))
        total = total + crf.end[tags[b, n - 1]]
        torch.testing.assert_close(total, crf.score(em[b:b + 1], tags[b:b + 1], mask[b:b + 1])[0])
    assert torch.equal(s[:, 0, 0], s[:, 0, 1])                # l = 1 does not depend on i


def test_bad_shapes():
    crf, em, mask = _setup()
    with pytest.raises(ValueError, match="at least one real position"):
        crf.log_partition(em, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="k must be at least 1"):
        crf.kbest(em, mask, 0)
