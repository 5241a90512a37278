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
