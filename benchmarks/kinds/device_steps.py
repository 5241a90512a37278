"""Training and labelling speed on an accelerator against the CPU of the same machine (issue 24 point 3): the
spos supernet's step over the macro space, the retrain step of a student (bilstm_soft, the macro space's
baseline), and the teacher's labelling rate, in float32 and (on CUDA) under bf16 autocast.

Speed does not depend on the values of the weights, so everything is built with random weights from the
teacher run's config.json, teacher.json and tokenizer (the kit of benchmarks/device_kit.py carries them, its
85 MiB of weights stay here): the supernet and the student from the macro space without the teacher's
embedding tables, the teacher from its configuration. Each step trains on real SST-2 training batches
(length-bucketed, ``batch`` rows, AdamW, mean squared error against fixed random teacher logits: the
`logit_mse` criterion's cost); the supernet samples one uniform path per step, as spos does. Each measurement
runs ``warmup`` steps, then steps for ``seconds`` (at least ``min_steps``), and reports steps (or rows) per
second with the device synchronised; the CPU runs at torch's default threads of the machine.

The studies: `python benchmarks/run.py device_steps_sst2` (here, the CPU alone) and `device_steps_sst2_gpu` (on
a lent GPU, with .kit/ carried: `python benchmarks/device_kit.py --drive -- device_steps_sst2_gpu`); under 10
minutes on either.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from common import DATA_DIR, REQUIRED, publish

PARAMS = {
    "teacher": (REQUIRED, "a teacher run (config.json, teacher.json and the tokenizer; weights not needed)"),
    "data_dir": (DATA_DIR, "the data folder (SST-2's train split)"),
    "devices": (["cpu"], "torch devices to measure (cuda where a GPU is lent)"),
    "batch": (32, "rows per training step"),
    "label_batch": (128, "rows per teacher labelling batch"),
    "warmup": (10, "steps run before timing"),
    "seconds": (20.0, "seconds each measurement times (at least min_steps steps)"),
    "min_steps": (20, "steps each measurement times at least"),
    "max_length": (128, "sub-token limit of the encoded sentences"),
    "compile": (False, "also time the retrain step under torch.compile(dynamic=True) (compile time reported apart)"),
    "table": ("device_steps_sst2", "the table written (benchmarks/results/TABLE.md)"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, n_items, device, warmup: int, seconds: float, min_steps: int) -> float:
    """Items per second of ``step(i)`` (each step handles ``n_items(i)`` items) after ``warmup`` steps."""
    for i in range(warmup):
        step(i)
    _sync(device)
    t0, done, items = time.perf_counter(), 0, 0
    while done < min_steps or time.perf_counter() - t0 < seconds:
        step(warmup + done)
        items += n_items(warmup + done)
        done += 1
    _sync(device)
    return items / (time.perf_counter() - t0)


def _batches(train, rows: int, pad_id: int, extra: dict):
    from naskd.data.encode import bucket_batches, collate

    out = []
    for b in bucket_batches(train.lengths, rows, seed=0, epoch=0):
        batch = collate(train, b, pad_id=pad_id)
        batch.update({k: v[: len(b)] for k, v in extra.items()})
        out.append(batch)
    return out


def run(args) -> None:
    from transformers import AutoTokenizer

    from naskd.data.encode import encode
    from naskd.data.readers import load_split
    from naskd.data.tasks import get_task
    from naskd.space.oneshot import BuildContext, load_oneshot_space
    from gpu_speed import teacher_of

    teacher_dir = Path(args.teacher).expanduser()
    info = json.loads((teacher_dir / "teacher.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    spec = get_task("sst2")
    train = encode(spec, load_split(spec, args.data_dir, "train"), tok, args.max_length)
    pad = tok.pad_token_id or 0
    ctx = BuildContext.for_task(spec, len(tok), None, info, dropout=0.1, seed=0)
    space = load_oneshot_space("macro", ctx=ctx)
    space.ctx = ctx
    g_student = space.baselines(ctx)["bilstm_soft"]
    target = torch.randn(args.batch, spec.num_labels, generator=torch.Generator().manual_seed(0))
    steps_batches = _batches(train, args.batch, pad, {})
    label_batches = _batches(train, args.label_batch, pad, {})
    feed_names = ("input_ids", "attention_mask", "token_type_ids")
    rows = []
    cpu_rates: dict = {}
    for name in args.devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"device {name}: torch sees no GPU here")
        for precision in (("fp32", "bf16") if device.type == "cuda" else ("fp32",)):
            bf16 = precision == "bf16"
            rates = {}

            def trainer(model, paths: bool, compiled: bool = False):
                model = model.to(device).train()
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
                fwd = torch.compile(model, dynamic=True) if compiled else model
                y = target.to(device)
                rng = np.random.default_rng(0)

                def step(i):
                    b = {k: v.to(device, non_blocking=True) for k, v in steps_batches[i % len(steps_batches)].items()
                         if k in feed_names}
                    kw = {"path": space.sample(rng)} if paths else {}
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        out = fwd(**kw, **b)
                        loss = torch.nn.functional.mse_loss(out.logits.float(), y[: out.logits.shape[0]])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                return step

            torch.manual_seed(0)
            rates["supernet steps/s"] = _timed(trainer(space.supernet(ctx), True), lambda i: 1, device, args.warmup,
                                               args.seconds, args.min_steps)
            torch.manual_seed(0)
            rates["retrain steps/s"] = _timed(trainer(space.build_student(g_student, ctx), False), lambda i: 1, device,
                                              args.warmup, args.seconds, args.min_steps)
            if args.compile:
                # the supernet is left eager: its path changes every step, and each path is another graph
                torch.manual_seed(0)
                step = trainer(space.build_student(g_student, ctx), False, compiled=True)
                t0 = time.perf_counter()
                for i in range(min(64, len(steps_batches))):        # compiles once per distinct bucket shape seen
                    step(i)
                _sync(device)
                rates["compile + 64 steps s"] = time.perf_counter() - t0
                rates["retrain steps/s (compiled)"] = _timed(step, lambda i: 1, device, 0, args.seconds,
                                                             args.min_steps)
            teacher, _, _ = teacher_of(teacher_dir)
            teacher = teacher.to(device).eval()

            def label(i):
                b = {k: v.to(device, non_blocking=True) for k, v in label_batches[i % len(label_batches)].items()
                     if k in feed_names}
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    teacher(**b)

            rates["teacher labelling rows/s"] = _timed(label, lambda i: len(label_batches[i % len(label_batches)]
                                                                             ["input_ids"]),
                                                       device, 2, args.seconds, 5)
            if device.type == "cpu":
                cpu_rates = rates
            row = {"device": f"{name} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})",
                   "precision": precision, **rates}
            for k, v in rates.items():
                if k.endswith("/s"):
                    row[f"{k.split(' ')[0]} x CPU"] = v / cpu_rates[k] if cpu_rates else None
            if args.compile:
                row["compiled x eager"] = rates["retrain steps/s (compiled)"] / rates["retrain steps/s"]
            rows.append(row)
            print(f"[device_steps] {row}", flush=True)
    threads = torch.get_num_threads()
    publish(args.table, "Supernet step, retrain step and teacher labelling rate on each device (SST-2)", rows,
            list(rows[0]),
            notes=(f"Macro-space spos supernet (one uniform path a step) and the bilstm_soft student at batch "
                   f"{args.batch}, AdamW, MSE to fixed logits; the teacher ({info.get('base_model', teacher_dir.name)}, "
                   f"random weights) labelling at batch {args.label_batch}; length-bucketed SST-2 training batches. "
                   f"CPU at {threads} torch threads. x CPU: the rate over the CPU's in the same run (empty when the "
                   "CPU was not measured first)." + (" compiled: the bilstm_soft retrain step under torch.compile(dynamic=True), "
                   "timed after 64 steps (compile + 64 steps s) that compile it for the bucket shapes met; compiled x eager: its "
                   "rate over the eager retrain step's on the same device and precision" if args.compile
                   else "")))
