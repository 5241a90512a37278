"""Teacher and student speed on a GPU: batch-1 latency (median over the SST-2 dev sentences, each unpadded)
and batch-128 throughput (length-bucketed dev batches), in float32 and under bf16 autocast, with ratios.

`naskd bench` measures the CPU, where the students are meant to run; this script answers the other question
a user asks, whether the student is also cheaper on a GPU. Speed does not depend on the values of the
weights, so the teacher is built from its run's config.json and teacher.json with random weights (its
85 MiB of weights need not travel to a lent GPU machine); the student is loaded as saved.

The studies: `python benchmarks/run.py gpu_speed_sst2` (the run_all.sh use, on a checkout) and
`gpu_speed_sst2_h100` (on a lent machine, from the kit of benchmarks/device_kit.py); parameters teacher,
model (a list of student directories), data_dir, out (X.json also writes X.md);
`--set table_only=true`: rewrite OUT's X.md from X.json, measuring nothing.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from common import DATA_DIR, REQUIRED, study_command

PARAMS = {
    "teacher": (REQUIRED, "the teacher run (its config.json, teacher.json and tokenizer; weights not needed)"),
    "model": (REQUIRED, "the student directories (a list)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "batch": (128, "batch size of the throughput measurement"),
    "repeat": (5, "passes over the dev batches of the throughput measurement (the median kept)"),
    "device": ("cuda", "the torch device"),
    "out": (None, "X.json: the measurements, and X.md their table"),
    "table_only": (False, "measure nothing: rewrite OUT's .md from OUT (X.json)"),
}


def teacher_of(run_dir: Path):
    """The teacher's architecture (random weights) and its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from naskd.teachers.model import TeacherModel, _drop_pooler

    info = json.loads((run_dir / "teacher.json").read_text())
    encoder = _drop_pooler(AutoModel.from_config(AutoConfig.from_pretrained(str(run_dir))))
    model = TeacherModel(encoder, info["kind"], info["num_labels"], info.get("pooling", "mean"))
    return model, AutoTokenizer.from_pretrained(str(run_dir)), info


def inputs(tokenizer, data_dir, batch: int):
    from naskd.data.encode import bucket_batches, collate, encode
    from naskd.data.readers import load_split
    from naskd.data.tasks import get_task

    spec = get_task("sst2")
    dev = encode(spec, load_split(spec, data_dir, "dev"), tokenizer, 128)
    pad = tokenizer.pad_token_id or 0
    singles = [collate(dev, [i], pad_id=pad) for i in range(len(dev))]
    big = [collate(dev, rows, pad_id=pad) for rows in bucket_batches(dev.lengths, batch, seed=0, epoch=0,
                                                                     shuffle=False)]
    return singles, big, len(dev)


def timer(model, names, device, bf16: bool):
    def run(b):
        feed = {n: b[n].to(device, non_blocking=True) for n in names}
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(**feed)
    return run


def measure(run, singles, big, n_examples, device, repeat: int) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for b in singles[:20] + big[:3]:
        run(b)
    sync()
    lat = []
    for b in singles:
        t = time.perf_counter()
        run(b)
        sync()
        lat.append(time.perf_counter() - t)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        for b in big:
            run(b)
        sync()
        rates.append(n_examples / (time.perf_counter() - t))
    return {"b1 ms": 1000 * statistics.median(lat), "b128 ex/s": statistics.median(rates)}


def markdown(d: dict) -> str:
    return (f"## Teacher and searched student on a GPU (SST-2 dev, {d['examples']} sentences)\n\n"
            f"Measured with `{d['command']}` on {d['device']}, torch {d['torch']}"
            + (f" ({d['note']})" if d.get("note") else "") + f".\n\n{d['table']}\n\n"
            "Batch 1: median latency over the dev sentences, each unpadded; batch 128: throughput over "
            "length-bucketed dev batches; fp32, and bf16 under autocast. Ratios against the teacher: x faster "
            "at batch 1, x throughput at batch 128. The teacher has random weights (speed does not depend on "
            "them); `naskd bench` gives the CPU table, where the students are meant to run.\n")


def run(args) -> None:
    if args.table_only:
        if not args.out:
            raise SystemExit("table_only rewrites OUT's .md from OUT: give out (X.json)")
        path = Path(args.out)
        Path(path.with_suffix(".md")).write_text(markdown(json.loads(path.read_text())))
        return
    if isinstance(args.model, str):           # one student given as --set model=DIR
        args.model = [args.model]
    from naskd.export import input_names
    from naskd.modeldir import load_model

    device = torch.device(args.device)
    teacher, tok, _ = teacher_of(Path(args.teacher))
    singles, big, n = inputs(tok, args.data_dir, args.batch)
    subjects = [("teacher (random weights, same architecture)", teacher.to(device).eval(),
                 ["input_ids", "attention_mask", "token_type_ids"])]
    for m in args.model:
        loaded = load_model(m)
        subjects.append((m, loaded.model.to(device).eval(), input_names(loaded)))
    rows = []
    for name, model, names in subjects:
        emb = sum(p.numel() for mod in model.modules() if isinstance(mod, torch.nn.Embedding)
                  for p in mod.parameters())
        row = {"model": name, "params without embeddings": sum(p.numel() for p in model.parameters()) - emb}
        for label, bf16 in (("fp32", False), ("bf16", True)):
            r = measure(timer(model, names, device, bf16), singles, big, n, device, args.repeat)
            row.update({f"{label} {k}": v for k, v in r.items()})
        rows.append(row)
        print(f"[gpu_speed] {name}: {row}", flush=True)
    t = rows[0]
    head = ["model", "params w/o emb"] + [f"{p} {k}" for p in ("fp32", "bf16") for k in ("b1 ms", "b128 ex/s")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['params without embeddings'] / 1e6:.2f}M"]
        for p in ("fp32", "bf16"):
            cells.append(f"{r[f'{p} b1 ms']:.2f} ({t[f'{p} b1 ms'] / r[f'{p} b1 ms']:.2f}x)")
            cells.append(f"{r[f'{p} b128 ex/s']:,.0f} ({r[f'{p} b128 ex/s'] / t[f'{p} b128 ex/s']:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    dev = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    table = "\n".join(lines)
    print(f"\nSST-2 dev ({n} sentences), {dev}, torch {torch.__version__}; ratios against the teacher "
          "(x faster at batch 1, x throughput at batch 128):\n")
    print(table)
    if args.out:
        from naskd.utils.io import write_json

        from naskd.utils.io import write_text

        d = {"device": dev, "torch": torch.__version__, "examples": n, "rows": rows,
             "command": study_command(), "table": table}
        write_json(args.out, d)
        write_text(Path(args.out).with_suffix(".md"), markdown(d))
