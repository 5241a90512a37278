"""AdamW implementations on a training step of the searched SST-2 student (width 64, batch 32, 24 tokens,
one thread): torch's default (a loop of small ops per tensor), foreach (batched over tensors) and fused (one
kernel per tensor, what `naskd.train.adamw` picks). The settings take turns, repeated, and the table reports
medians, so a machine whose speed drifts moves them alike.

The study: `python benchmarks/run.py optimizer_step` (benchmarks/studies/); writes
benchmarks/results/optimizer_step.{md,json}.
"""
from __future__ import annotations

import statistics
import time

import torch

from common import publish

from naskd.genotype import Genotype
from naskd.students.fixed import FixedStudent

SETTINGS = {"default": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
PARAMS = {
    "genotype": ("runs/sst2-search-seed0/genotype.json", "genotype.json of the student trained (width 64)"),
    "rounds": (5, "rounds, each setting timed once per round (the table: medians over rounds)"),
    "steps": (20, "steps per setting and round"),
}


def run(args) -> None:
    torch.set_num_threads(1)
    g = Genotype.load(args.genotype)
    ids = torch.randint(1000, 30000, (32, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    subjects = {}
    for name, kw in SETTINGS.items():
        torch.manual_seed(0)
        m = FixedStudent(g, kind="single", num_labels=2, vocab_size=30522, width=64)
        subjects[name] = (m, torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01, **kw))
    step_ms = {k: [] for k in SETTINGS}
    opt_ms = {k: [] for k in SETTINGS}

    def step(m, opt):
        opt.zero_grad()
        m(input_ids=ids, attention_mask=mask)["logits"].pow(2).mean().backward()
        opt.step()

    for m, opt in subjects.values():
        for _ in range(3):
            step(m, opt)
    for _ in range(args.rounds):
        for name, (m, opt) in subjects.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step(m, opt)
            step_ms[name].append(1000 * (time.perf_counter() - t) / args.steps)
            t = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            opt_ms[name].append(1000 * (time.perf_counter() - t) / args.steps)
    base_step, base_opt = statistics.median(step_ms["default"]), statistics.median(opt_ms["default"])
    rows = [{"AdamW": name, "training step ms": statistics.median(step_ms[name]),
             "step speed-up": base_step / statistics.median(step_ms[name]),
             "optimizer step ms": statistics.median(opt_ms[name]),
             "optimizer speed-up": base_opt / statistics.median(opt_ms[name])} for name in SETTINGS]
    n = sum(p.numel() for p in subjects["default"][0].parameters())
    publish("optimizer_step", f"AdamW on a training step of the searched SST-2 student ({n / 1e6:.2f}M parameters)",
            rows, list(rows[0]),
            notes=(f"Median of {args.rounds} rounds of {args.steps} steps per setting, the settings in turns; one "
                   "thread; batch 32 x 24 tokens (forward, backward, optimizer step). The optimizer step alone is "
                   "timed on the last gradients. `naskd.train.adamw` (retrain, search weights, teacher) uses "
                   "fused where torch has it. This run shared the 2-core machine with two training processes. The embedding table (1.95M of the parameters) gets a dense "
                   "gradient, so every step updates all of it."))
