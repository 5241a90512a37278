"""Distillation criteria as pure functions of tensors.

Shapes: B batch, C classes, L tokens, D width, J matched layers. Masks are bool, True = real token.
Every function returns a scalar tensor; each docstring states its formula and source.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS_LOG = 1e-8


def hard_ce(logits: torch.Tensor, labels: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """Cross-entropy with gold labels, mean over the batch; regression: mean squared error.

    logits (B, C) [or (B,) for regression], labels (B,)."""
    if regression:
        return F.mse_loss(logits.float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def soft_ce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton et al. 2015: T^2 * mean_b sum_c -softmax(t_b / T)_c * log_softmax(s_b / T)_c.

    The T^2 factor keeps gradient magnitudes comparable across temperatures. (B, C) each."""
    t = F.softmax(teacher.float() / temperature, dim=-1)
    return -(t * F.log_softmax(student.float() / temperature, dim=-1)).sum(-1).mean() * temperature ** 2


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Ba & Caruana 2014; Tang et al. 2019 (distilled BiLSTM): mean_b ||z_s - z_t||_2^2 over logits.

    (B, C), or (B,) for regression (then the squared difference of predictions)."""
    diff = student.float() - teacher.float()
    if diff.dim() == 1:
        return (diff ** 2).mean()
    return (diff ** 2).sum(-1).mean()


def pkd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Patient KD (Sun et al. 2019), NAS-KD's L_ii: sum_j mean_b || s_bj/||s_bj|| - t_bj/||t_bj|| ||_2^2.

    student, teacher: (B, J, D) [CLS] states of matched layers, the student already projected to the
    teacher's width. NAS-KD writes the normaliser as ||h||_2^2, a typo for ||h||_2 (with the square the
    normalised vectors are not unit length and the loss depends on scale); we follow PKD's ||h||_2."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return ((s - t) ** 2).sum(-1).mean(0).sum()


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0, keepdim=True)       # HX: centring the features centres the linear kernel
    return x @ x.transpose(0, 1)          # (n, n) = H K H for K = X X^T


def cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Linear centred kernel alignment (Kornblith et al. 2019):
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T, HSIC(K, L) = tr(KHLH)/(n-1)^2.

    x (n, D1), y (n, D2): n paired samples. The (n-1)^2 factors cancel. n < 2 is undefined (returns 0)."""
    if x.size(0) < 2:
        return x.new_zeros(())
    kc, lc = _centred_gram(x.float()), _centred_gram(y.float())
    hsic_kl = (kc * lc).sum()             # tr(Kc Lc), both symmetric
    hsic_kk = (kc * kc).sum()
    hsic_ll = (lc * lc).sum()
    return hsic_kl / torch.sqrt(hsic_kk * hsic_ll + eps)


def cka_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log(CKA + 1e-8), as in Jung et al.'s code."""
    return -torch.log(cka(x, y) + EPS_LOG)


def fsd_intra(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Intra-feature structure (Jung et al.): per example, -log CKA between the student's and the
    teacher's token-by-token matrices over real tokens, (L_b, D_s) against (L_b, D_t); mean over the
    examples with at least 2 tokens (CKA of one sample is undefined); 0 if there are none.

    student (B, L, D_s), teacher (B, L, D_t), mask (B, L)."""
    losses = [cka_loss(student[b][mask[b]], teacher[b][mask[b]])
              for b in range(student.size(0)) if int(mask[b].sum()) >= 2]
    if not losses:
        return student.sum() * 0.0
    return torch.stack(losses).mean()


def fsd_local(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Local inter-feature structure (Jung et al.): -log CKA across the B examples of the batch on
    flattened (B, L*D) features with padding zeroed (student and teacher share token positions). A batch
    of one example is undefined and gives 0."""
    m = mask.unsqueeze(-1).to(student.dtype)
    if student.size(0) < 2:
        return student.sum() * 0.0
    return cka_loss((student * m).flatten(1), (teacher * m.to(teacher.dtype)).flatten(1))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def fsd_global(student_feat: torch.Tensor, teacher_feat: torch.Tensor, student_memory: torch.Tensor,
               teacher_memory: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Global inter-feature structure (Jung et al.) against memories of K centroids:
    -log CKA(M_s, M_t) + beta * MSE(dist(f_s, M_s), dist(f_t, M_t))
                       + (1 - beta) * MSE(cos(f_s, M_s), cos(f_t, M_t)),
    with dist the Euclidean and cos the cosine feature-to-centroid matrices (B, K).

    student_feat (B, D_s), teacher_feat (B, D_t) pooled features; memories (K, D_s), (K, D_t)."""
    s, t = student_feat.float(), teacher_feat.float()
    ms, mt = student_memory.float(), teacher_memory.float()
    structure = cka_loss(ms, mt)
    dist = F.mse_loss(torch.cdist(s, ms), torch.cdist(t, mt))
    cos = F.mse_loss(F.normalize(s, dim=-1) @ F.normalize(ms, dim=-1).T,
                     F.normalize(t, dim=-1) @ F.normalize(mt, dim=-1).T)
    return structure + beta * dist + (1.0 - beta) * cos


# ------------------------------------------------------------------ structured KD for CRF taggers
# Shapes: B batch, W words, T tags; ``mask`` (B, W) bool with real words first. A CRF is given by its
# parameters (start (T,), end (T,), trans (T, T)) and emissions (B, W, T); see naskd.crf.

def _up(x: torch.Tensor) -> torch.Tensor:
    """Half precision (autocast) up to float32; float32 and float64 kept as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def substructure_l2(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2022, eq. 9 (sub-structure KD): mean over real positions l and tag pairs (i, j) of
    (s^s_l(i, j) - s^t_l(i, j))^2, with s_l(i, j) = trans[i, j] + e_l[j] (start[j] + e_1[j] at l = 1).

    scores (B, W, T, T) from :func:`naskd.crf.substructure_scores`."""
    diff = (_up(student_scores) - _up(teacher_scores)) ** 2
    m = mask.to(diff.dtype)
    T2 = diff.size(-1) * diff.size(-2)
    return (diff.sum((-1, -2)) * m).sum() / (m.sum() * T2).clamp_min(1.0)


def substructure_emission(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The emission-only form of sub-structure KD: mean over real positions l and tags j of
    (e^s_l[j] - e^t_l[j])^2. student, teacher (B, W, T)."""
    diff = (_up(student) - _up(teacher)) ** 2
    m = mask.to(diff.dtype)
    return (diff.sum(-1) * m).sum() / (m.sum() * diff.size(-1)).clamp_min(1.0)


def kbest_kd(student_emissions, mask, start, end, trans, teacher_paths, teacher_scores) -> torch.Tensor:
    """Kim & Rush 2016 (K-best sequence-level KD; Lin et al. eq. 7): the teacher's k best paths as
    pseudo-labels, each weighted by p_t(y) / sum_{y' in k-best} p_t(y') = softmax of their teacher
    scores (log Z_t cancels), trained with the student's CRF likelihood:
    mean_b -sum_r w_br log p_s(y_br | x_b).

    teacher_paths (B, k, W) long, teacher_scores (B, k) (-inf for missing paths: weight 0)."""
    from ..crf import log_partition, sequence_score

    B, k, W = teacher_paths.shape
    w = torch.softmax(_up(teacher_scores), dim=1)                           # (B, k)
    em = _up(student_emissions)
    rep = lambda t: t.unsqueeze(1).expand(B, k, *t.shape[1:]).reshape(B * k, *t.shape[1:])  # noqa: E731
    score = sequence_score(rep(em), teacher_paths.reshape(B * k, W), rep(mask), _up(start), _up(end),
                           _up(trans)).view(B, k)
    log_z = log_partition(em, mask, _up(start), _up(end), _up(trans))          # (B,)
    logp = score - log_z.unsqueeze(1)
    return -(torch.where(w > 0, w * logp, torch.zeros_like(logp))).sum(1).mean()


def struct_kd(student_emissions, mask, start, end, trans, teacher_unary, teacher_pair) -> torch.Tensor:
    """Wang et al. 2021 (structural KD; Lin et al. eq. 8): log Z_s - sum_l sum_ij p_t(y_{l-1} = i, y_l = j | x)
    s^s_l(i, j), i.e. the cross-entropy -E_{p_t}[log p_s(y | x)] computed exactly from the teacher's
    posteriors. The first position uses p_t(y_1 = j) with start[j] + e_1[j], and the last the end
    transitions weighted by p_t(y_n = j), so the value is exact (eq. 8 leaves both implicit).

    teacher_unary (B, W, T), teacher_pair (B, W, T, T) from :func:`naskd.crf.marginals`."""
    from ..crf import log_partition

    em = _up(student_emissions)
    st, en, tr = _up(start), _up(end), _up(trans)
    log_z = log_partition(em, mask, st, en, tr)
    pu, pp = _up(teacher_unary), _up(teacher_pair)
    first = (pu[:, 0] * (st + em[:, 0])).sum(-1)                               # (B,)
    inner = (pp[:, 1:] * (tr + em[:, 1:].unsqueeze(2))).sum((-1, -2))           # (B, W-1)
    inner = (inner * mask[:, 1:]).sum(1)
    last = (mask.sum(1) - 1)
    p_last = pu.gather(1, last.view(-1, 1, 1).expand(-1, 1, pu.size(-1))).squeeze(1)
    expected = first + inner + (p_last * en).sum(-1)
    return (log_z - expected).mean()
