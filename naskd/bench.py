"""`naskd bench`: size, speed and accuracy of several models in one run, with ratios to the teacher.

For each model (student directory or teacher run; its task from its own config): parameters (all, and
without embedding tables), dev metrics, CPU latency at batch 1 (median over the dev sentences, each
unpadded; with several threads, also with one, the setting that serves one request per core) and
throughput at batch 128 (length-bucketed dev batches), in PyTorch and in ONNX Runtime
(the model exported as by `naskd export`). Ratios compare each model with the teacher of its task:
``x fewer params`` = teacher / model; ``x throughput`` = model / teacher; ``x faster b1`` = teacher
latency / model latency. The models take turns while timed (``time_interleaved``), so the ratios survive
a machine whose speed drifts.
"""
from __future__ import annotations

import statistics
import sys
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
from .utils.io import write_json, write_text
from .utils.rundir import data_root_or_none, prepare_run_dir
from .utils.progress import bar
from .utils.runtime import busy_cores


def bar_iter(items, desc):
    """Iterate ``items`` under a progress bar counted in models."""
    pbar = bar(len(items), desc, unit="model")
    for item in items:
        yield item
        pbar.update(1)
    pbar.close()


def _feeds(batch: dict, names: list[str]) -> dict:
    return {n: batch[n].numpy().astype(np.int64) for n in names}


def _latencies(run, singles: list[dict]) -> float:
    """Median seconds of one example at batch 1 (after a few warm-up calls), one model alone."""
    for b in singles[:5]:
        run(b)
    out = []
    for b in singles:
        t = time.perf_counter()
        run(b)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


class _Subject:
    """One model ready to be timed: its row (sizes, accuracy), its batch-1 inputs, its batch-128 inputs,
    and a runner per timed setting (``setting -> (run, threads)``)."""

    def __init__(self, row: dict, singles: list[dict], big: list[dict]):
        self.row, self.singles, self.big = row, singles, big
        self.latency: dict = {}      # "torch b1 ms" etc. -> (run, torch threads while timing)
        self.throughput: dict = {}   # "torch b128 ex/s" etc. -> run
        self.keep: list = []         # ONNX sessions: alive as long as the subject


def prepare_model(loaded: LoadedModel, *, data_dir, latency_examples: int | None, throughput_batch: int,
                  onnx: bool, threads: int) -> _Subject:
    """Everything but the timing: parameters, dev metrics, inputs, exported ONNX sessions, the checked
    agreement of ONNX with PyTorch."""
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
    row["dev metrics"] = metrics
    row["dev examples"] = len(dev)
    row["latency examples"] = len(singles)
    sub = _Subject(row, singles, big)

    def torch_run(b):
        with torch.inference_mode():
            model(**{n: b[n] for n in names})

    sub.latency["torch b1 ms"] = (torch_run, threads)
    if threads > 1:          # one request per core: small models lose to thread overhead at batch 1
        sub.latency["torch b1 ms 1 thread"] = (torch_run, 1)
    sub.throughput["torch b128 ex/s"] = torch_run
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
        sub.keep += [sess, one]
        used = [i.name for i in sess.get_inputs()]   # the exporter drops inputs a model ignores

        def ort_run(b, s=sess):
            return s.run(None, _feeds(b, used))[0]

        if spec.kind != "tagging":
            ort_logits = np.concatenate([ort_run(b) for b in big])
            order = np.concatenate([b["rows"].numpy() for b in big])
            row["onnx max abs diff"] = float(np.abs(ort_logits - np.asarray(logits)[order]).max())
        sub.latency["onnx b1 ms"] = (ort_run, threads)
        if one is not None:
            sub.latency["onnx b1 ms 1 thread"] = (lambda b: ort_run(b, one), threads)
        sub.throughput["onnx b128 ex/s"] = ort_run
    return sub


def time_interleaved(subjects: list[_Subject], *, repeat: int, threads: int, progress=None,
                     block: int = 25) -> None:
    """Time every setting of every model, the models taking turns: blocks of ``block`` dev sentences, each
    block run by every model (after one untimed call, so its weights are back in the caches, as in a
    server that runs one model) before the next block, the first model rotating; each throughput pass
    run by every model before the next pass. A machine that slows down for a while slows all models alike,
    so the ratios hold when the absolute times move (on a shared VM they move by a third between runs).
    Turns per sentence would not do: every call would start with the other models' weights in the caches,
    which costs a small model more than a large one. Writes medians into the rows."""
    settings = list(dict.fromkeys(k for sub in subjects for k in sub.latency))
    for key in settings:
        subs = [sub for sub in subjects if key in sub.latency]
        torch.set_num_threads(subs[0].latency[key][1])
        times = {id(sub): [] for sub in subs}
        for sub in subs:                                   # warm-up
            for b in sub.singles[:5]:
                sub.latency[key][0](b)
        n = max(len(sub.singles) for sub in subs)
        for turn, start in enumerate(range(0, n, block)):
            for k in range(len(subs)):
                sub = subs[(turn + k) % len(subs)]
                todo = sub.singles[start:start + block]
                if not todo:
                    continue
                run = sub.latency[key][0]
                run(todo[0])                               # untimed: this model's weights back in cache
                for b in todo:
                    t = time.perf_counter()
                    run(b)
                    times[id(sub)].append(time.perf_counter() - t)
        for sub in subs:
            sub.row[key] = 1e3 * statistics.median(times[id(sub)])
        torch.set_num_threads(threads)
        if progress is not None:
            progress.update(1)
    for key in dict.fromkeys(k for sub in subjects for k in sub.throughput):
        subs = [sub for sub in subjects if key in sub.throughput]
        for sub in subs:
            sub.throughput[key](sub.big[0])                # warm-up
        passes = {id(sub): [] for sub in subs}
        for r in range(repeat):
            for k in range(len(subs)):
                sub = subs[(r + k) % len(subs)]
                t = time.perf_counter()
                for b in sub.big:
                    sub.throughput[key](b)
                passes[id(sub)].append(time.perf_counter() - t)
        for sub in subs:
            sub.row[key] = sub.row["dev examples"] / statistics.median(passes[id(sub)])
        if progress is not None:
            progress.update(1)


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


SIZE_AND_SPEED_COLUMNS = [
    "params", "params without embeddings", "x fewer params (no emb)",
    *[f"{eng} {c}" for eng in ("torch", "onnx") for c in (
        "b1 ms", "x faster b1", "b1 ms 1 thread", "x faster b1 1 thread", "x faster b1 best threads",
        "b128 ex/s", "x throughput")]]


def markdown(rows: list[dict]) -> str:
    metric = [k for k in rows[0] if k.startswith("dev ") and k not in ("dev metrics", "dev examples")]
    cols = ["model", "task", *metric, *SIZE_AND_SPEED_COLUMNS]
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
    threads = before if threads is None else threads
    if threads < 1:
        raise NaskdError(f"--threads must be at least 1, got {threads}")
    run_dir = prepare_run_dir(Path(out or f"runs/{loaded[0].task}-bench"), command="bench", overwrite=overwrite,
                              resume=False, reads=[*models, data_root_or_none(data_dir)])
    torch.set_num_threads(threads)
    try:
        subjects = []
        for lm in bar_iter(loaded, "bench: load, evaluate, export"):
            subjects.append(prepare_model(lm, data_dir=data_dir, latency_examples=latency_examples,
                                          throughput_batch=throughput_batch, onnx=onnx, threads=threads))
        n_settings = len({k for sub in subjects for k in sub.latency}) + len({k for sub in subjects
                                                                               for k in sub.throughput})
        pbar = bar(n_settings, "bench: timing, models taking turns", unit="setting")
        busy = [busy_cores(threads)]
        time_interleaved(subjects, repeat=repeat, threads=threads, progress=pbar)
        busy.append(busy_cores(threads))
        pbar.close()
    finally:
        torch.set_num_threads(before)     # the caller's setting, whatever happened
    rows = [sub.row for sub in subjects]
    add_ratios(rows)
    table = markdown(rows)
    import platform

    head = (f"CPU {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}; "
            f"batch-1 latency = median over {rows[0]['latency examples']} dev sentences"
            + (f", with {threads} threads and with 1 (one request per core)" if threads > 1 else "")
            + f"; throughput = dev set in length-bucketed batches of {throughput_batch} ({threads} threads), "
            f"median of {repeat} passes. The models take turns (each block of 25 sentences, each pass, run by "
            "every model before the next), so a slow spell of the machine hits all of them alike.")
    loads = [b for b in busy if b is not None]
    if loads:
        used, cores = max(loads)
        warning = (f"the machine was busy while timing (other processes used {used:.1f} of its {cores} cores; "
                   f"timed at {threads} thread(s)): they slow the models unequally, so these ratios can be off by "
                   "several times; bench again on a quiet machine")
        print(f"warning: {warning}", file=sys.stderr)
        head += f" WARNING: {warning}."
    write_text(run_dir / "bench.md", head + "\n\n" + table + "\n")
    result = {"command": "bench", "threads": threads, "rows": rows, "note": head, "busy": bool(loads)}
    write_json(run_dir / "bench.json", result)
    result["_table"], result["_out"] = table, str(run_dir)
    return result
