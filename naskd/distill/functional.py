"""Distillation criteria as pure functions of tensors.

Shapes: B batch, C classes, L tokens, D width, J matched layers. Masks are bool, True = real token.
Every function returns a scalar tensor; each docstring states its formula and source.
"""
from __future__ import annotations

import contextlib

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


PKD_NORMS = ("l2", "sq_l2")


def pkd(student: torch.Tensor, teacher: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Intermediate-state distance on matched layers (NAS-KD's L_ii):
    sum_j mean_b || s_bj / n(s_bj) - t_bj / n(t_bj) ||_2^2.

    student, teacher: (B, J, D) [CLS] states of J matched layers, the student already projected to the
    teacher's width. ``norm`` picks n(h):

    - ``"l2"`` (default): n(h) = ||h||_2, Patient KD (Sun et al. 2019, EMNLP, the patient loss L_PT); the
      normalised vectors are unit length and each term lies in [0, 4].
    - ``"sq_l2"``: n(h) = ||h||_2^2, as the NAS-KD poster writes L_ii. The normalised vector is
      h / ||h||^2, of length 1 / ||h||, so the loss is not scale invariant: it shrinks as the states grow
      (scaling both sides by c divides the loss by c^2).

    Scale: the sum over layers and width and the mean over the batch give J*D times the value of PKD's
    code (``F.mse_loss`` of the normalised states, a mean over B, J and D). A zero state is left as zero
    (its norm is clamped at 1e-12, as :func:`torch.nn.functional.normalize` does).
    Raises ValueError for an unknown ``norm``."""
    if norm not in PKD_NORMS:
        raise ValueError(f"pkd: norm must be one of {PKD_NORMS}, got {norm!r}")
    s, t = student.float(), teacher.float()
    if norm == "l2":
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    else:
        s = s / (s * s).sum(-1, keepdim=True).clamp_min(1e-12)
        t = t / (t * t).sum(-1, keepdim=True).clamp_min(1e-12)
    return ((s - t) ** 2).sum(-1).mean(0).sum()


def _up(x: torch.Tensor) -> torch.Tensor:
    """Half precision (autocast) up to float32; float32 and float64 kept as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _full_precision(x: torch.Tensor):
    """A context that switches autocast off on x's device (CKA's Gram products must not run in bf16)."""
    if x.device.type in ("cpu", "cuda"):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _centred_unit(x: torch.Tensor) -> torch.Tensor:
    """Centre the n rows of x (n, D) and scale the result to unit Frobenius norm.

    The features are first divided by their largest magnitude, so neither the centring nor the norm can
    overflow or underflow at any magnitude float32 holds. Both scale factors are detached: CKA is
    invariant to isotropic scaling of each argument, so by Euler's theorem its gradient is orthogonal to
    the features and the factors' own derivatives contribute nothing; the gradient stays exact. All-equal
    rows (no variance) give zeros."""
    tiny = torch.finfo(x.dtype).tiny
    with torch.no_grad():
        peak = x.abs().amax().clamp_min(tiny)
    x = x / peak
    x = x - x.mean(0, keepdim=True)
    with torch.no_grad():
        size = torch.linalg.vector_norm(x).clamp_min(tiny)
    return x / size


def cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear centred kernel alignment (Kornblith et al. 2019, ICML, section 3, with the linear kernel):
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T, HSIC(K, L) = tr(KHLH) / (n-1)^2,
    equivalently ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) with column-centred X_c, Y_c.

    x (n, D1), y (n, D2): n paired samples; returns a scalar in [0, 1], float64 for float64 input and
    float32 otherwise (half precision is computed in float32, with autocast off). The (n-1)^2 factors
    cancel. Each argument is centred and scaled to unit Frobenius norm before any product, so the value
    is invariant to isotropic scaling at any float32 magnitude and gradients stay finite and exact
    (:func:`_centred_unit`). The products are taken between examples (n x n Gram matrices) when
    n <= D1 + D2 and between features (D x D) otherwise; both give the same value.

    Undefined cases return 0 (so :func:`cka_loss` is the constant -log 1e-8): n < 2, or an argument
    whose rows are all equal. Raises ValueError unless x and y are 2-D with the same number of rows."""
    if x.dim() != 2 or y.dim() != 2 or x.size(0) != y.size(0):
        raise ValueError(f"cka: x and y must be (n, D) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.size(0) < 2:
        return _up(x).new_zeros(())
    with _full_precision(x):
        a, b = _centred_unit(_up(x)), _centred_unit(_up(y))
        if b.dtype != a.dtype:
            b = b.to(a.dtype)
        n, d1, d2 = a.size(0), a.size(1), b.size(1)
        if n <= d1 + d2:
            k, l_ = a @ a.transpose(0, 1), b @ b.transpose(0, 1)          # centred Gram matrices (n, n)
            hsic_kl, hsic_kk, hsic_ll = (k * l_).sum(), (k * k).sum(), (l_ * l_).sum()
        else:
            hsic_kl = (b.transpose(0, 1) @ a).square().sum()             # ||Y^T X||_F^2
            hsic_kk = (a.transpose(0, 1) @ a).square().sum()
            hsic_ll = (b.transpose(0, 1) @ b).square().sum()
        ok = (hsic_kk > 0) & (hsic_ll > 0)          # False only for rows without variance
        one = torch.ones_like(hsic_kk)              # keeps sqrt's derivative at 0 out of the graph
        den = torch.where(ok, hsic_kk, one).sqrt() * torch.where(ok, hsic_ll, one).sqrt()
        return torch.where(ok, hsic_kl / den, torch.zeros_like(hsic_kl))


def cka_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log(CKA + 1e-8), as in Jung et al.'s code (``linear_CKA_loss`` in metrics/LayerWiseMetrics.py).

    x (n, D1), y (n, D2); see :func:`cka`."""
    return -torch.log(cka(x, y) + EPS_LOG)


FSD_INTRA_AGGREGATES = ("log_mean", "mean_log")


def fsd_intra(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
              aggregate: str = "log_mean") -> torch.Tensor:
    """Intra-feature structure (Jung et al. 2023, FSD): per example b, linear CKA c_b between the student's
    and the teacher's token-by-token features over its real tokens, (L_b, D_s) against (L_b, D_t).

    ``aggregate="log_mean"`` (default, as Jung et al.'s code: ``linear_CKA_loss`` on the batched (B, L, D)
    features takes ``-log(mean_b |c_b| + 1e-8)``): -log(mean_b c_b + 1e-8).
    ``aggregate="mean_log"``: mean_b -log(c_b + 1e-8), naskd's form before issue 22 and a deviation from
    the source (a mean of logs weights sentences with low CKA more heavily).

    Only examples with at least 2 real tokens enter (CKA of one sample is undefined); none gives 0. A
    second deviation: the source computes CKA over all max_seq_length positions, padding included;
    naskd uses the real tokens only.

    student (B, L, D_s), teacher (B, L, D_t), mask (B, L) bool. Returns a scalar (nats). Raises
    ValueError for an unknown ``aggregate``."""
    if aggregate not in FSD_INTRA_AGGREGATES:
        raise ValueError(f"fsd_intra: aggregate must be one of {FSD_INTRA_AGGREGATES}, got {aggregate!r}")
    values = [cka(student[b][mask[b]], teacher[b][mask[b]])
              for b in range(student.size(0)) if int(mask[b].sum()) >= 2]
    if not values:
        return student.sum() * 0.0
    c = torch.stack(values)
    if aggregate == "log_mean":
        return -torch.log(c.mean() + EPS_LOG)
    return (-torch.log(c + EPS_LOG)).mean()


def fsd_local(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Local inter-feature structure (Jung et al. 2023, FSD): -log(CKA + 1e-8) across the B examples of
    the batch on flattened (B, L*D) features with padding zeroed (student and teacher share token
    positions). A batch of one example is undefined and gives 0.

    student (B, L, D_s), teacher (B, L, D_t), mask (B, L) bool. Returns a scalar (nats)."""
    m = mask.unsqueeze(-1).to(student.dtype)
    if student.size(0) < 2:
        return student.sum() * 0.0
    return cka_loss((student * m).flatten(1), (teacher * m.to(teacher.dtype)).flatten(1))


def hsic_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased linear HSIC (Song et al. 2012, JMLR 13, the unbiased estimator HSIC_1; as used by Nguyen
    et al. 2021):

    HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)),

    K~ = X X^T and L~ = Y Y^T with their diagonals set to zero. Its expectation over samples of n
    examples is the population HSIC, ||Cov(x, y)||_F^2 for linear kernels; a single value may be negative.

    x (n, D1), y (n, D2), n >= 4 paired samples. Computed in float64 (the terms cancel); the features are
    centred first, which leaves the value unchanged (the estimator is invariant to shifting either
    argument) and keeps the cancellation small. Units: the product of the two features' units squared.
    Raises ValueError for other shapes or n < 4."""
    if x.dim() != 2 or y.dim() != 2 or x.size(0) != y.size(0):
        raise ValueError(f"hsic_unbiased: x and y must be (n, D) with the same n, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n = x.size(0)
    if n < 4:
        raise ValueError(f"hsic_unbiased needs at least 4 samples, got {n}")
    with _full_precision(x):
        a, b = x.double(), y.double()
        a, b = a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True)
        k, l_ = a @ a.T, b @ b.T
        k = k - torch.diag_embed(torch.diagonal(k))
        l_ = l_ - torch.diag_embed(torch.diagonal(l_))
        trace = (k * l_).sum()
        sums = k.sum() * l_.sum() / ((n - 1) * (n - 2))
        cross = 2.0 / (n - 2) * (k.sum(0) @ l_.sum(1))
        return (trace + sums - cross) / (n * (n - 3))


def minibatch_cka(batches) -> torch.Tensor:
    """Mini-batch CKA (Nguyen et al. 2021, "Do wide and deep networks learn the same things?", ICLR, the
    CKA_minibatch estimator):

    CKA_mb = sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) * sum_i HSIC_1(L_i, L_i)),

    with :func:`hsic_unbiased` on each batch i. Because each HSIC_1 is unbiased, the sums converge to
    the population HSIC terms as batches are added, so the estimate converges to the population linear
    CKA; the mean of per-batch CKA does not (its bias depends on the batch size, not on the number of
    batches). With one batch this is the "debiased" CKA of Kornblith et al.'s demo code.

    batches: an iterable of (x_i (n_i, D1), y_i (n_i, D2)) pairs, n_i >= 4. Returns a float64 scalar
    (NaN if the accumulated HSIC_1(K, K) or HSIC_1(L, L) is not positive, i.e. no usable signal).
    Raises ValueError if there is no batch."""
    kl = kk = ll = None
    for x, y in batches:
        terms = (hsic_unbiased(x, y), hsic_unbiased(x, x), hsic_unbiased(y, y))
        if kl is None:
            kl, kk, ll = terms
        else:
            kl, kk, ll = kl + terms[0], kk + terms[1], ll + terms[2]
    if kl is None:
        raise ValueError("minibatch_cka: no batches")
    if not (kk > 0 and ll > 0):
        return torch.tensor(float("nan"), dtype=torch.float64)
    return kl / (kk.sqrt() * ll.sqrt())


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
