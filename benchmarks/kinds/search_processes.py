"""Does a search get faster with more processes? `naskd search` in one process against the same search under
`torchrun --nproc_per_node W` (issue 24), at the same global batch.

Each setting runs the same spos supernet (macro space, SST-2 training rows) with `--batch-size B`: one process
on ``threads_one`` threads, then W processes of one thread each splitting every batch by rows. The table gives
the supernet's training seconds, the whole wall time (timing, discrete search and pick included, on rank 0),
their ratios one / W (above 1: the W processes are faster) and whether every rank ended with the same weights.
Run it alone on the machine: it measures time.

The study: `python benchmarks/run.py search_processes_sst2` (benchmarks/studies/).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import DATA_DIR, REQUIRED, publish

PARAMS = {
    "teacher": (REQUIRED, "the SST-2 teacher run"),
    "root": (REQUIRED, "where the runs go (each setting's pair is run again: the runs are timings)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "processes": (2, "W: processes of the multi-process runs (torchrun --nproc_per_node)"),
    "threads_one": (2, "threads of the one-process run (the machine's cores: what W one-thread processes use)"),
    "batch_sizes": ([32, 256], "global batch sizes (--batch-size) to compare at"),
    "max_train_examples": (20000, "training rows (the selection split is carved from them)"),
    "epochs": (1, "supernet epochs"),
    "trials": (20, "NSGA-II trials of the discrete search"),
}


def _search(args, out: Path, batch: int, processes: int) -> dict:
    flags = ["search", "--strategy", "spos", "--space", "macro", "--task", "sst2", "--teacher", args.teacher,
             "--data-dir", args.data_dir, "--max-train-examples", str(args.max_train_examples), "--epochs",
             str(args.epochs), "--trials", str(args.trials), "--batch-size", str(batch), "--latency-threads", "1",
             "--device", "cpu", "--out", str(out)]
    if processes == 1:
        cmd, threads = [sys.executable, "-m", "naskd", *flags], args.threads_one
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "naskd", *flags]
        threads = 1
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def run(args) -> None:
    root = Path(args.root)
    rows = []
    for b in args.batch_sizes:
        one = _search(args, root / f"b{b}-one", b, 1)
        many = _search(args, root / f"b{b}-w{args.processes}", b, args.processes)
        rows.append({"global batch": b, "steps": one["supernet_steps"],
                     f"supernet s, 1 process x {args.threads_one} threads": one["supernet_seconds"],
                     f"supernet s, {args.processes} processes x 1 thread": many["supernet_seconds"],
                     "supernet ratio (>1: processes faster)": one["supernet_seconds"] / many["supernet_seconds"],
                     "wall s, 1 process": one["wall_seconds_this_process"],
                     f"wall s, {args.processes} processes": many["wall_seconds_this_process"],
                     "wall ratio": one["wall_seconds_this_process"] / many["wall_seconds_this_process"],
                     "same steps": one["supernet_steps"] == many["supernet_steps"],
                     "replicas agree": many.get("replicas_agree"),
                     "same pick": one["pick"]["text"] == many["pick"]["text"]})
    cols = list(rows[0])
    publish("search_processes_sst2", "spos search on SST-2: one process against several (torchrun), same global batch",
            rows, cols, notes=(f"spos on the macro space, {args.max_train_examples:,} SST-2 training rows, "
                               f"{args.epochs} epoch(s), {args.trials} NSGA-II trials, teacher "
                               f"`{Path(args.teacher).name}`. Every batch is split across the processes by rows and "
                               "the gradients averaged (only those the step's path produced, the word table by "
                               "rows: naskd.utils.dist.average_gradients), so both runs take the same steps."))
