"""Lin et al. 2022's Table 2 on this CPU: seconds per epoch of teacher forward, student forward and
student backward under vanilla training (CRF likelihood), kbest, struct_kd and substructure, with the
teacher run live for every method and with teacher outputs read from the cache; then the criteria
alone (loss forward + backward on the same tensors).

Studies (one thread each):
  python benchmarks/run.py structured_epochs       # Table 2 (only=epochs): needs the CoNLL-2000 teacher run
  python benchmarks/run.py structured_criteria     # the criteria alone (only=criteria): no teacher run needed
Without `only` a run writes both tables.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from common import DATA_DIR, publish, timed

from naskd.crf import CRF
from naskd.data.tasks import get_task
from naskd.distill import DistillationLoss, KDContext

METHODS = {"vanilla (CRF likelihood)": "hard_ce", "kbest": "kbest", "struct_kd": "struct_kd",
           "substructure": "substructure"}
PARAMS = {
    "teacher": ("runs/conll2000-teacher", "the CoNLL-2000 teacher run (Table 2)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "cache_dir": (None, "the teacher output cache (none: the default)"),
    "examples": (1000, "training sentences of Table 2's epoch"),
    "batch_size": (32, "batch size"),
    "width": (128, "the student's width (Table 2)"),
    "repeat": (20, "timed runs of each criterion alone (their median)"),
    "only": (None, "one table only: criteria (the criteria alone, no teacher run needed) or epochs (Table 2); "
                   "none: both"),
}


def criteria_alone(args) -> None:
    """Same tensors for every criterion: batch 32, 30 words, CoNLL-2000's 23 tags."""
    spec = get_task("conll2000")
    T, B, W = spec.num_labels, args.batch_size, 30
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, W + 1, (B,), generator=g)
    word_mask = torch.arange(W)[None] < lengths[:, None]
    t_crf = {k: torch.randn(*s, generator=g) for k, s in (("start", (T,)), ("end", (T,)), ("trans", (T, T)))}
    ctx = KDContext(spec, 3, 64, 6, 384, teacher_crf=t_crf)
    em_t = torch.randn(B, W, T, generator=g) * word_mask[..., None]
    labels = torch.randint(0, T, (B, W), generator=g).masked_fill(~word_mask, -100)
    student_crf = CRF(T)
    rows = []
    for name, kd_name in METHODS.items():
        kd = DistillationLoss(kd_name, ctx)
        em_s = torch.randn(B, W, T, generator=g, requires_grad=True)
        batch = {"labels": labels}        # no progress given: the start of training, lambda = 1 (KD alone)

        def step():
            loss, _ = kd({"logits": em_s, "word_mask": word_mask, "crf": student_crf, "states": [],
                          "mask": word_mask}, {"logits": em_t, "hidden": {}}, batch)
            loss.backward()

        rows.append({"criterion": name, "ms per batch (forward + backward)": 1e3 * timed(step, args.repeat, 3)})
    base = {r["criterion"]: r["ms per batch (forward + backward)"] for r in rows}
    for r in rows:
        r["substructure / this"] = base["substructure"] / r["ms per batch (forward + backward)"]
    publish("structured_criteria", "Structured KD criteria alone (CPU): loss forward + backward per batch", rows,
            ["criterion", "ms per batch (forward + backward)", "substructure / this"],
            notes=f"Batch {B} sentences of 5..{W} words, {T} tags (CoNLL-2000), the same random emissions and CRFs "
                  f"for every criterion; median of {args.repeat} runs; {torch.get_num_threads()} thread(s). Vanilla "
                  "is the student's CRF negative log-likelihood; kbest includes the teacher's 3-best Viterbi, "
                  "struct_kd the teacher's forward-backward, both on cached teacher emissions.")


def epochs(args) -> None:
    from naskd.data.encode import bucket_batches
    from naskd.genotype import sample_genotype
    from naskd.pipeline import batch_to, prepare, teacher_batch
    from naskd.distill.context import teacher_crf
    from naskd.space import load_space
    from naskd.students import FixedStudent
    from naskd.teachers.model import load_teacher, read_teacher_info

    spec = get_task("conll2000")
    info = read_teacher_info(args.teacher, spec.name)
    data = prepare(spec.name, Path(args.teacher), data_dir=args.data_dir, max_train_examples=args.examples,
                   max_eval_examples=50, seed=0, requests=[], cache_dir=args.cache_dir)
    teacher, _, _ = load_teacher(args.teacher)
    space = load_space("nas_kd")
    genotype = sample_genotype(space, layers=3, width=args.width, rng=np.random.default_rng(0))
    ctx = KDContext(spec, 3, args.width, int(info["num_layers"]), int(info["hidden_size"]),
                    teacher_crf=teacher_crf(args.teacher))
    batches = bucket_batches(data.train.lengths, args.batch_size, seed=0, epoch=0)
    rows = []
    for live in (True, False):
        for name, kd_name in METHODS.items():
            torch.manual_seed(0)
            student = FixedStudent(genotype, kind=spec.kind, num_labels=spec.num_labels, vocab_size=len(data.tokenizer))
            kd = DistillationLoss(kd_name, ctx)
            opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
            t_teacher = t_fwd = t_bwd = 0.0
            for rows_ in batches:
                b = batch_to(data.make_batch(rows_, with_teacher=False), "cpu")
                t0 = time.perf_counter()
                if kd_name != "hard_ce":
                    if live:
                        with torch.no_grad():
                            b["teacher"] = {"logits": teacher(**b)["logits"], "hidden": {}}
                    else:
                        b["teacher"] = teacher_batch(data.train_outputs, rows_, [])
                t1 = time.perf_counter()
                loss, _ = kd(student(**b), b.get("teacher", {}), b)
                t2 = time.perf_counter()
                opt.zero_grad()
                loss.backward()
                opt.step()
                t3 = time.perf_counter()
                t_teacher, t_fwd, t_bwd = t_teacher + t1 - t0, t_fwd + t2 - t1, t_bwd + t3 - t2
            rows.append({"teacher": "live" if live else "cached", "method": name, "teacher forward s": t_teacher,
                         "student forward + loss s": t_fwd, "student backward s": t_bwd,
                         "epoch s": t_teacher + t_fwd + t_bwd})
    for r in rows:
        ref = next(x for x in rows if x["teacher"] == r["teacher"] and x["method"] == "substructure")
        r["epoch / substructure epoch"] = r["epoch s"] / ref["epoch s"]
    cols = ["teacher", "method", "teacher forward s", "student forward + loss s", "student backward s", "epoch s",
            "epoch / substructure epoch"]
    note = (f"One epoch over a {len(data.train):,}-sentence CoNLL-2000 training subsample in batches of "
            f"{args.batch_size}; teacher {args.teacher} ({info['num_layers']} layers); student: a 3-cell nas_kd "
            f"genotype (sample seed 0) at width {args.width} with a CRF; {torch.get_num_threads()} thread(s). "
            "The teacher's K-best / forward-backward run inside the loss (student forward column).")
    publish("structured_epochs", "Lin et al. Table 2 on CPU: seconds per epoch by method", rows, cols, notes=note)


def run(args) -> None:
    if args.only not in (None, "criteria", "epochs"):
        raise SystemExit(f"only={args.only!r}: one of criteria, epochs")
    if args.only in (None, "criteria"):
        criteria_alone(args)
    if args.only in (None, "epochs"):
        epochs(args)
