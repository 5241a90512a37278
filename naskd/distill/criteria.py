"""Criteria as modules over model outputs; the maths lives in :mod:`naskd.distill.functional`.

Student outputs: ``logits`` (B, C) or (B,), ``states`` = [embeddings, cell 1, ..., cell M_s], each
(B, L, D_s), and ``mask`` (B, L). Teacher outputs: ``logits`` and ``hidden`` {HiddenRequest: tensor},
read from the teacher output cache. A criterion states the teacher hidden states it needs
(:meth:`teacher_requests`) so the cache computes only those.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.tasks import REGRESSION, TAGGING, TaskSpec
from ..errors import ConfigError
from ..teachers.cache import HiddenRequest
from ..records import Progress
from . import functional as Fn
from .registry import CRITERIA, parse_kd, register_criterion


@dataclass
class KDContext:
    task: TaskSpec
    student_layers: int            # M_s, number of cells
    student_width: int
    teacher_layers: int            # M_t
    teacher_width: int
    temperature: float = 1.0
    pkd_pairs: list = field(default_factory=list)   # [(student cell, teacher layer)], overrides m(j)
    fsd_memory: int | None = None                   # None: 300 for large tasks, else 100
    fsd_beta: float = 0.5
    fsd_weights: tuple = (1.0, 1.0, 1.0)            # intra, local, global inside `fsd`
    seed: int = 0
    teacher_crf: dict | None = None                 # tagging: the teacher's CRF {start, end, trans}
    kbest: int = 3                                  # K of the kbest criterion

    @property
    def regression(self) -> bool:
        return self.task.kind == REGRESSION

    @property
    def tagging(self) -> bool:
        return self.task.kind == TAGGING


class Criterion(nn.Module):
    """A distillation criterion: ``forward(student, teacher, batch)`` -> a scalar. ``self.progress`` (a
    :class:`naskd.records.Progress`, set by :class:`DistillationLoss` before each call; the start of
    training when it was given none) is where training stands, for criteria with a schedule."""
    name = ""
    uses_teacher = True
    tasks = "any"          # "sentence", "tagging" or "any": the task kinds the criterion is defined for

    def __init__(self, ctx: KDContext):
        super().__init__()
        self.ctx = ctx
        self.progress = Progress()
        if self.tasks == "sentence" and ctx.tagging:
            raise ConfigError(f"criterion {self.name} compares sentence-level outputs; for the tagging task "
                              f"{ctx.task.name} use one of {', '.join(criteria_for('tagging'))}")
        if self.tasks == "tagging" and not ctx.tagging:
            raise ConfigError(f"criterion {self.name} distils CRF taggers; task {ctx.task.name} is not a tagging "
                              f"task (use one of {', '.join(criteria_for('sentence'))})")

    def teacher_requests(self) -> list[HiddenRequest]:
        return []

    def setup(self, train_outputs, train_data) -> None:
        """Called once before training with the teacher outputs of the whole training set."""

    def forward(self, student: dict, teacher: dict, batch: dict) -> torch.Tensor:
        raise NotImplementedError


def criteria_for(kind: str) -> list[str]:
    """Names of the registered criteria defined for "sentence" or "tagging" tasks."""
    return sorted(n for n, c in CRITERIA.items() if c.tasks in ("any", kind))


def _labelled(batch: dict):
    return batch.get("has_label")


@register_criterion("hard_ce")
class HardCE(Criterion):
    """Cross-entropy with the gold labels (MSE for regression; for CRF taggers the negative
    log-likelihood of the gold tag sequence); synthetic examples without a gold label (``has_label``
    False) are left out."""

    uses_teacher = False

    def forward(self, student, teacher, batch):
        if self.ctx.tagging:
            return student["crf"].nll(student["logits"].float(), batch["labels"], student["word_mask"])
        logits, labels = student["logits"], batch["labels"]
        keep = _labelled(batch)
        if keep is not None:
            if not bool(keep.any()):
                return logits.sum() * 0.0
            logits, labels = logits[keep], labels[keep]
        return Fn.hard_ce(logits, labels, self.ctx.regression)


@register_criterion("soft_ce")
class SoftCE(Criterion):
    """Hinton et al. 2015, temperature ``--temperature`` (T^2-scaled); for regression, the squared
    difference to the teacher's prediction."""

    tasks = "sentence"

    def forward(self, student, teacher, batch):
        if self.ctx.regression:
            return Fn.logit_mse(student["logits"], teacher["logits"])
        return Fn.soft_ce(student["logits"], teacher["logits"], self.ctx.temperature)


@register_criterion("logit_mse")
class LogitMSE(Criterion):
    """Tang et al. 2019: squared distance between student and teacher logits."""

    tasks = "sentence"

    def forward(self, student, teacher, batch):
        return Fn.logit_mse(student["logits"], teacher["logits"])


def default_pairs(m_s: int, m_t: int) -> list[tuple[int, int]]:
    """m(j) = round(j * M_t / M_s), half up, for j = 1 .. M_s - 1 (the last cell is left to the logit
    terms; PKD's skip mapping, Sun et al. 2019). Any M_s and M_t >= 1: with more student cells than teacher
    layers several cells share a layer, and a first cell below half a layer maps to the embeddings (0)."""
    if m_s < 1 or m_t < 1:
        raise ConfigError(f"pkd: {m_s} student cells and {m_t} teacher layers; both must be at least 1")
    return [(j, int(np.floor(j * m_t / m_s + 0.5))) for j in range(1, m_s)]


@register_criterion("pkd")
class PKD(Criterion):
    """Patient KD (Sun et al. 2019) on [CLS] states: student cell j matched to teacher layer
    m(j) = round(j*M_t/M_s) (0 = embeddings), j = 1..M_s-1, through a learned linear projection when the
    widths differ; states normalised by their L2 norm, as PKD does. See
    :func:`naskd.distill.functional.pkd` and ``pkd_sqnorm`` for the NAS-KD poster's normalisation."""

    norm = "l2"

    def __init__(self, ctx):
        super().__init__(ctx)
        explicit = [tuple(p) for p in ctx.pkd_pairs]
        pairs = explicit or default_pairs(ctx.student_layers, ctx.teacher_layers)
        if not explicit and pairs:        # said once, in the run's log: which cell learns from which layer
            print(f"[kd] {self.name}: student cell -> teacher layer "
                  + ", ".join(f"{s}->{t}" for s, t in pairs)
                  + f" (m(j) = round(j x {ctx.teacher_layers} / {ctx.student_layers}); 0 = embeddings; "
                  "--pkd-pairs to choose)", flush=True)
        for s, t in pairs:
            if not 0 <= s <= ctx.student_layers or not 0 <= t <= ctx.teacher_layers:
                raise ConfigError(f"pkd pair {s}:{t} is outside student cells 0..{ctx.student_layers} / "
                                  f"teacher layers 0..{ctx.teacher_layers}")
        self.pairs = pairs
        self.proj = (nn.Linear(ctx.student_width, ctx.teacher_width, bias=False)
                     if ctx.student_width != ctx.teacher_width else nn.Identity())

    def teacher_requests(self):
        return [HiddenRequest(t, "cls") for _, t in self.pairs]

    def forward(self, student, teacher, batch):
        if not self.pairs:  # one cell: nothing left before the logits
            return student["logits"].sum() * 0.0
        s = torch.stack([student["states"][j][:, 0] for j, _ in self.pairs], 1)     # (B, J, D_s)
        t = torch.stack([teacher["hidden"][HiddenRequest(l, "cls")] for _, l in self.pairs], 1)
        return Fn.pkd(self.proj(s), t, norm=self.norm)


@register_criterion("pkd_sqnorm")
class PKDSquaredNorm(PKD):
    """NAS-KD's L_ii as the poster writes it: :class:`PKD` with each state divided by its squared L2 norm,
    h / ||h||_2^2, instead of ||h||_2 (``Fn.pkd(..., norm="sq_l2")``). Not scale invariant: the loss
    falls as 1/c^2 when the states grow by c. Same layer pairs and projection as ``pkd``; choose it
    with e.g. ``--kd soft_ce=0.5,hard_ce=0.5,pkd_sqnorm=10``."""

    norm = "sq_l2"


def _penultimate(ctx: KDContext) -> HiddenRequest:
    return HiddenRequest(ctx.teacher_layers - 1, "tokens")


class _PenultimateStructure(Criterion):
    """A structure loss between the student's penultimate cell states (B, L, D_s) and the teacher's
    penultimate layer (B, L, D_t) over the token mask: ``structure(student, teacher, mask)``, a scalar."""

    structure = None

    def teacher_requests(self):
        return [_penultimate(self.ctx)]

    def forward(self, student, teacher, batch):
        t = teacher["hidden"][_penultimate(self.ctx)]
        return type(self).structure(student["states"][-2], t, student["mask"])


@register_criterion("fsd_intra")
class FSDIntra(_PenultimateStructure):
    """Jung et al.: intra-feature structure, per-example token CKA on penultimate features,
    -log of the batch mean of the per-example CKA as in their code (:func:`naskd.distill.functional.fsd_intra`)."""

    structure = staticmethod(Fn.fsd_intra)


@register_criterion("fsd_local")
class FSDLocal(_PenultimateStructure):
    """Jung et al.: local inter-feature structure, CKA across the batch on flattened features
    (:func:`naskd.distill.functional.fsd_local`)."""

    structure = staticmethod(Fn.fsd_local)


@register_criterion("fsd_global")
class FSDGlobal(Criterion):
    """Jung et al.: global inter-feature structure against k-means memories.

    The teacher memory is K k-means centroids of the training set's teacher features, each a masked
    mean over tokens (a stated deviation: the paper flattens fixed-length features, which dynamic padding
    rules out); K = ``fsd_memory`` (default 300 for large tasks, else 100), at most n/4 with a warning.
    The student memory (K, D_s) is learned. Neither is part of an exported student."""

    def __init__(self, ctx):
        super().__init__(ctx)
        k = ctx.fsd_memory or (300 if ctx.task.large else 100)
        self.size = int(k)
        self.register_buffer("teacher_memory", torch.zeros(self.size, ctx.teacher_width))
        g = torch.Generator().manual_seed(ctx.seed)
        self.student_memory = nn.Parameter(torch.randn(self.size, ctx.student_width, generator=g) * 0.1)
        self.ready = False

    def teacher_requests(self):
        return [HiddenRequest(self.ctx.teacher_layers - 1, "mean"), _penultimate(self.ctx)]

    def setup(self, train_outputs, train_data):
        from sklearn.cluster import KMeans

        feats = np.asarray(train_outputs.array(HiddenRequest(self.ctx.teacher_layers - 1, "mean").item),
                           dtype=np.float32)
        n = len(feats)
        k = self.size
        if k > n // 4:
            k = max(2, n // 4)
            warnings.warn(f"fsd_global: {n} training examples are too few for a memory of {self.size}; "
                          f"using {k} centroids (n/4)")
            self.size = k
            self.teacher_memory = torch.zeros(k, self.ctx.teacher_width)
            self.student_memory = nn.Parameter(self.student_memory.data[:k].clone())
        km = KMeans(n_clusters=k, n_init=3, random_state=self.ctx.seed).fit(feats)
        self.teacher_memory.copy_(torch.from_numpy(km.cluster_centers_.astype(np.float32)))
        self.ready = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kw):
        # a resumed run restores the memories, whatever size setup() chose
        key = prefix + "teacher_memory"
        if key in state_dict and state_dict[key].shape != self.teacher_memory.shape:
            self.size = state_dict[key].shape[0]
            self.teacher_memory = torch.zeros_like(state_dict[key])
            self.student_memory = nn.Parameter(torch.zeros(self.size, self.ctx.student_width))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        self.ready = True

    def forward(self, student, teacher, batch):
        if not self.ready:
            raise RuntimeError("fsd_global.setup() must run before training (it builds the teacher memory)")
        s = Fn.masked_mean(student["states"][-2], student["mask"])
        t = teacher["hidden"][HiddenRequest(self.ctx.teacher_layers - 1, "mean")]
        return Fn.fsd_global(s, t, self.student_memory, self.teacher_memory.to(s.dtype), self.ctx.fsd_beta)


@register_criterion("fsd")
class FSD(Criterion):
    """Feature structure distillation: fsd_weights-weighted sum of fsd_intra, fsd_local, fsd_global."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.parts = nn.ModuleList([FSDIntra(ctx), FSDLocal(ctx), FSDGlobal(ctx)])

    def teacher_requests(self):
        return sorted({r for p in self.parts for r in p.teacher_requests()}, key=lambda r: r.item)

    def setup(self, train_outputs, train_data):
        self.parts[2].setup(train_outputs, train_data)

    def forward(self, student, teacher, batch):
        return sum(w * p(student, teacher, batch) for w, p in zip(self.ctx.fsd_weights, self.parts) if w)


class _CRFCriterion(Criterion):
    """Structured KD for CRF taggers (Lin et al. 2022). The value is lambda * KD + (1 - lambda) * NLL,
    lambda following the method's schedule over training (``self.progress``: epoch, epochs and the
    fraction of training steps done, from the training loop). The teacher's CRF comes from its run
    (``KDContext.teacher_crf``); its emissions from the output cache."""

    tasks = "tagging"

    def __init__(self, ctx):
        super().__init__(ctx)
        if ctx.teacher_crf is None:
            raise ConfigError(f"criterion {self.name} needs the teacher's CRF (a tagging teacher run)")
        for k, v in ctx.teacher_crf.items():
            self.register_buffer(f"t_{k}", v.float().clone(), persistent=False)

    def schedule(self) -> float:
        """Baselines (Lin et al.): lambda falls linearly from 1 to 0 over training."""
        return 1.0 - float(self.progress.fraction)

    def kd(self, student, teacher_emissions, mask) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, student, teacher, batch):
        lam = self.schedule()
        mask = student["word_mask"]
        nll = student["crf"].nll(student["logits"].float(), batch["labels"], mask) if lam < 1 else 0.0
        kd = self.kd(student, teacher["logits"].to(student["logits"].device), mask) if lam > 0 else 0.0
        return lam * kd + (1.0 - lam) * nll

    def teacher_crf(self):
        return self.t_start, self.t_end, self.t_trans


@register_criterion("substructure")
class Substructure(_CRFCriterion):
    """Lin et al. 2022 eq. 9: sub-structure L2 between student and teacher factor scores
    s_l(i, j) = trans[i, j] + e_l[j] (start transitions at l = 1), mean over real positions and tag pairs
    (:func:`naskd.distill.functional.substructure_l2`). Schedule: lambda = 1, NLL alone in the last epoch.
    Needs no dynamic programme: teacher scores are the cached emissions plus its transitions."""

    def schedule(self) -> float:
        p = self.progress
        return 0.0 if p.epochs > 1 and p.epoch == p.epochs - 1 else 1.0

    def kd(self, student, teacher_emissions, mask):
        from ..crf import substructure_scores

        crf = student["crf"]
        t_start, _, t_trans = self.teacher_crf()
        return Fn.substructure_l2(substructure_scores(student["logits"], crf.start, crf.trans),
                                  substructure_scores(teacher_emissions, t_start, t_trans), mask)


@register_criterion("substructure_emission")
class SubstructureEmission(Substructure):
    """The emission-only form of sub-structure KD: squared distance between emissions (same schedule)."""

    def kd(self, student, teacher_emissions, mask):
        return Fn.substructure_emission(student["logits"], teacher_emissions, mask)


@register_criterion("kbest")
class KBest(_CRFCriterion):
    """Kim & Rush 2016 (Lin et al. eq. 7): the teacher's K-best paths (K = 3) as pseudo-labels weighted by
    their renormalised teacher probabilities, trained with the student's CRF likelihood
    (:func:`naskd.distill.functional.kbest_kd`). The teacher's K-best Viterbi runs on cached emissions."""

    def kd(self, student, teacher_emissions, mask):
        from ..crf import kbest_viterbi

        t_start, t_end, t_trans = self.teacher_crf()
        with torch.no_grad():
            paths, scores = kbest_viterbi(teacher_emissions.float(), mask, t_start, t_end, t_trans, self.ctx.kbest)
        crf = student["crf"]
        return Fn.kbest_kd(student["logits"], mask, crf.start, crf.end, crf.trans, paths, scores)


@register_criterion("struct_kd")
class StructKD(_CRFCriterion):
    """Wang et al. 2021 (Lin et al. eq. 8): log Z_s minus the student's factor scores weighted by the
    teacher's tag-pair posteriors (:func:`naskd.distill.functional.struct_kd`); the teacher's
    forward-backward runs on cached emissions."""

    def kd(self, student, teacher_emissions, mask):
        from ..crf import marginals

        t_start, t_end, t_trans = self.teacher_crf()
        with torch.no_grad():
            unary, pair = marginals(teacher_emissions.float(), mask, t_start, t_end, t_trans)
        crf = student["crf"]
        return Fn.struct_kd(student["logits"], mask, crf.start, crf.end, crf.trans, unary, pair)


class DistillationLoss(nn.Module):
    """L = sum_k w_k * criterion_k; NAS-KD's a*L_soft + (1-a)*L_hard + b*L_intermediate is
    ``soft_ce=a,hard_ce=1-a,pkd=b``. Its parameters join the weight optimiser and its state is
    checkpointed; it is never part of an exported student."""

    def __init__(self, spec, ctx: KDContext):
        super().__init__()
        self.terms = parse_kd(spec)
        self.criteria = nn.ModuleDict({n: CRITERIA[n](ctx) for n, _ in self.terms})
        self.weights = dict(self.terms)

    def teacher_requests(self) -> list[HiddenRequest]:
        return sorted({r for c in self.criteria.values() for r in c.teacher_requests()},
                      key=lambda r: (r.layer, r.positions))

    @property
    def needs_teacher(self) -> bool:
        return any(c.uses_teacher for c in self.criteria.values())

    def setup(self, train_outputs, train_data) -> None:
        for c in self.criteria.values():
            c.setup(train_outputs, train_data)

    def forward(self, student: dict, teacher: dict, batch: dict, progress: Progress | None = None):
        """(total, {criterion: value}); ``progress`` (from the training loop; None: the start of training)
        is handed to every criterion as ``progress``."""
        total, logs = 0.0, {}
        for name, crit in self.criteria.items():
            w = self.weights[name]
            if w == 0:
                continue
            crit.progress = progress if progress is not None else Progress()
            value = crit(student, teacher, batch)
            logs[name] = float(value.detach())
            total = total + w * value
        return total, logs
