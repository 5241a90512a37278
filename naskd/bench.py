"""`naskd bench`: size, speed and accuracy of several models in one run, with ratios to the teacher.

For each model (student directory or teacher run; its task from its own config): parameters (all, and
without embedding tables), dev metrics, CPU latency at batch 1 (median over the dev sentences, each
unpadded; with several threads, also with one, the setting that serves one request per core) and
throughput at batch 128 (length-bucketed dev batches), in PyTorch and in ONNX Runtime
(the model exported as by `naskd export`). Ratios compare each model with the teacher of its task:
``x fewer params`` = teacher / model; ``x throughput`` = model / teacher; ``x faster b1`` = teacher
latency / model latency.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .data.encode import bucket_batches, collate, encode
from .data.readers import load_split, subsample
from .data.tasks import get_task
from .errors import NaskdError
from .modeldir import LoadedModel, load_model
from .network import count_parameters
from .predict import evaluate_model
from .utils.io import prepare_run_dir, write_json, write_text
from .utils.progress import bar


def _feeds(batch: dict, names: list[str]) -> dict:
    return {n: batch[n].numpy().astype(np.int64) for n in names}


def _time_batches(run, batches: list[dict], repeat: int) -> float:
    """Median seconds of one pass over ``batches``."""
    run(batches[0])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for b in batches:
            run(b)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _latencies(run, singles: list[dict]) -> float:
    """Median seconds of one example at batch 1 (after a few warm-up calls)."""
    for b in singles[:5]:
        run(b)
    out = []
    for b in singles:
        t = time.perf_counter()
        run(b)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench_model(loaded: LoadedModel, *, data_dir, latency_examples: int | None, throughput_batch: int,
                repeat: int, onnx: bool, threads: int) -> dict:
    from .export import export_onnx, input_names

    spec = get_task(loaded.task)
    cols = load_split(spec, data_dir, "dev")
    dev = encode(spec, cols, loaded.tokenizer, loaded.max_length)
    model = loaded.model.eval()
    total, emb = count_parameters(model)
    names = input_names(loaded)
    lat_rows = subsample(len(dev), latency_examples, 0)
    singles = [collate(dev, [i], pad_id=loaded.pad_id) for i in lat_rows]
    big = [collate(dev, rows, pad_id=loaded.pad_id)
           for rows in bucket_batches(dev.lengths, throughput_batch, seed=0, epoch=0, shuffle=False)]
    row = {"model": loaded.name, "path": str(loaded.path), "task": spec.name, "role": loaded.role,
           "params": total, "params without embeddings": total - emb}
    metrics, logits = evaluate_model(model, spec, dev, batch_size=throughput_batch, device="cpu",
                                     pad_id=loaded.pad_id)
    row["dev " + spec.main_metric] = metrics[spec.main_metric]

    def torch_run(b):
        with torch.inference_mode():
            model(**{n: b[n] for n in names})

    row["torch b1 ms"] = 1e3 * _latencies(torch_run, singles)
    if threads > 1:          # one request per core: small models lose to thread overhead at batch 1
        torch.set_num_threads(1)
        try:
            row["torch b1 ms 1 thread"] = 1e3 * _latencies(torch_run, singles)
        finally:
            torch.set_num_threads(threads)
    row["torch b128 ex/s"] = len(dev) / _time_batches(torch_run, big, repeat)
    if onnx:
        import onnxruntime as ort

        def session(path, n_threads: int):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n_threads
            opts.inter_op_num_threads = 1
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        with tempfile.TemporaryDirectory() as tmp:      # sessions hold the model: the file may go
            path = export_onnx(loaded, Path(tmp) / "model.onnx")
            sess = session(path, threads)
            one = session(path, 1) if threads > 1 else None

        used = [i.name for i in sess.get_inputs()]   # the exporter drops inputs a model ignores

        def ort_run(b):
            return sess.run(None, _feeds(b, used))[0]

        ort_logits = np.concatenate([ort_run(b) for b in big]) if spec.kind != "tagging" else None
        if ort_logits is not None:
            order = np.concatenate([b["rows"].numpy() for b in big])
            ref = np.asarray(logits)[order]
            row["onnx max abs diff"] = float(np.abs(ort_logits - ref).max())
        row["onnx b1 ms"] = 1e3 * _latencies(ort_run, singles)
        if one is not None:
            row["onnx b1 ms 1 thread"] = 1e3 * _latencies(lambda b: one.run(None, _feeds(b, used))[0], singles)
        row["onnx b128 ex/s"] = len(dev) / _time_batches(ort_run, big, repeat)
    row["dev metrics"] = metrics
    row["dev examples"] = len(dev)
    row["latency examples"] = len(singles)
    return row


def add_ratios(rows: list[dict]) -> None:
    teachers = {}
    for r in rows:
        if r["role"] == "teacher":
            teachers.setdefault(r["task"], r)
    for r in rows:
        t = teachers.get(r["task"]) or next(x for x in rows if x["task"] == r["task"])
        r["baseline"] = t["model"]
        r["x fewer params (no emb)"] = t["params without embeddings"] / max(1, r["params without embeddings"])
        for eng in ("torch", "onnx"):
            if f"{eng} b1 ms" in r:
                r[f"{eng} x faster b1"] = t[f"{eng} b1 ms"] / r[f"{eng} b1 ms"]
            if f"{eng} b1 ms 1 thread" in r and f"{eng} b1 ms 1 thread" in t:
                r[f"{eng} x faster b1 1 thread"] = t[f"{eng} b1 ms 1 thread"] / r[f"{eng} b1 ms 1 thread"]
                # each model at the thread count that serves it fastest (a deployment picks it per model)
                r[f"{eng} x faster b1 best threads"] = best_b1(t, eng) / best_b1(r, eng)
            if f"{eng} b128 ex/s" in r:
                r[f"{eng} x throughput"] = r[f"{eng} b128 ex/s"] / t[f"{eng} b128 ex/s"]


def best_b1(row: dict, eng: str) -> float:
    """A row's batch-1 latency at its faster thread setting (all threads, or one)."""
    return min(row[f"{eng} b1 ms"], row.get(f"{eng} b1 ms 1 thread", float("inf")))


def markdown(rows: list[dict]) -> str:
    metric = [k for k in rows[0] if k.startswith("dev ") and k not in ("dev metrics", "dev examples")]
    cols = ["model", "task", *metric, "params", "params without embeddings", "x fewer params (no emb)",
            "torch b1 ms", "torch x faster b1", "torch b1 ms 1 thread", "torch x faster b1 1 thread",
            "torch x faster b1 best threads", "torch b128 ex/s", "torch x throughput"]
    if "onnx b1 ms" in rows[0]:
        cols += ["onnx b1 ms", "onnx x faster b1", "onnx b1 ms 1 thread", "onnx x faster b1 1 thread",
                 "onnx x faster b1 best threads", "onnx b128 ex/s", "onnx x throughput"]
    cols = [c for c in cols if any(c in r for r in rows)]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}" if v < 1 else f"{v:,.1f}" if v < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def run_bench(models: list[str], *, data_dir=None, out=None, overwrite: bool = False,
              latency_examples: int | None = None, throughput_batch: int = 128, repeat: int = 3,
              onnx: bool = True, threads: int | None = None) -> dict:
    if not models:
        raise NaskdError("name at least one model with --model PATH")
    loaded = [load_model(m) for m in models]          # every path checked before any timing
    for lm in loaded:
        load_split(get_task(lm.task), data_dir, "dev")
    before = torch.get_num_threads()
    threads = threads or before
    if threads < 1:
        raise NaskdError(f"--threads must be at least 1, got {threads}")
    run_dir = prepare_run_dir(Path(out or f"runs/{loaded[0].task}-bench"), overwrite=overwrite, resume=False)
    rows = []
    pbar = bar(len(loaded), "bench", unit="model")
    torch.set_num_threads(threads)
    try:
        for lm in loaded:
            rows.append(bench_model(lm, data_dir=data_dir, latency_examples=latency_examples,
                                    throughput_batch=throughput_batch, repeat=repeat, onnx=onnx, threads=threads))
            pbar.update(1)
    finally:
        torch.set_num_threads(before)     # the caller's setting, whatever happened
    pbar.close()
    add_ratios(rows)
    table = markdown(rows)
    import platform

    head = (f"CPU {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}; "
            f"batch-1 latency = median over {rows[0]['latency examples']} dev sentences"
            + (f", with {threads} threads and with 1 (one request per core)" if threads > 1 else "")
            + f"; throughput = dev set in length-bucketed batches of {throughput_batch} ({threads} threads), "
            f"median of {repeat} passes.")
    write_text(run_dir / "bench.md", head + "\n\n" + table + "\n")
    result = {"command": "bench", "threads": threads, "rows": rows, "note": head}
    write_json(run_dir / "bench.json", result)
    result["_table"], result["_out"] = table, str(run_dir)
    return result
