"""Does a search get faster when `naskd worker` processes share its candidates through an Optuna storage
(issue 24 point 2)?

Each strategy runs twice on the same settings: one process on ``threads_one`` threads, then the search
process with ``workers`` `naskd worker` processes beside it, all on one thread, sharing one SQLite study.
random trains its candidates standalone (the shared part is all of its work); spos trains its supernet in
the search process alone and shares the discrete search. The table gives each run's wall time and the
shared phase's seconds, their ratios (above 1: the shared run is faster), how many candidates each process
evaluated, and whether both runs picked the same architecture. Run it alone on the machine: it measures time.

The study: `python benchmarks/run.py search_workers_sst2` (benchmarks/studies/).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import DATA_DIR, REQUIRED, publish

PARAMS = {
    "teacher": (REQUIRED, "the SST-2 teacher run"),
    "root": (REQUIRED, "where the runs go (each setting is run again: the runs are timings)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "workers": (1, "`naskd worker` processes beside the search process"),
    "threads_one": (2, "threads of the one-process run (the machine's cores: what the shared run's processes use)"),
    "strategies": (["random", "spos"], "strategies to compare"),
    "max_train_examples": (20000, "training rows (the selection split is carved from them)"),
    "epochs": (1, "epochs (random: of each candidate; spos: of the supernet)"),
    "candidates": (4, "random: candidates"),
    "trials": (200, "spos: NSGA-II trials"),
    "table": ("search_workers_sst2", "the table written (benchmarks/results/TABLE.md)"),
}


def _flags(args, strategy: str, out: Path) -> list[str]:
    return ["search", "--strategy", strategy, "--space", "macro", "--task", "sst2", "--teacher", args.teacher,
            "--data-dir", args.data_dir, "--max-train-examples", str(args.max_train_examples), "--epochs",
            str(args.epochs), "--candidates", str(args.candidates), "--trials", str(args.trials),
            "--latency-threads", "1", "--device", "cpu", "--out", str(out)]


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _fresh(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _one(args, strategy: str, out: Path) -> tuple[dict, float]:
    _fresh(out)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "naskd", *_flags(args, strategy, out)], env=_env(args.threads_one),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{strategy} in one process failed:\n{r.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - t0


def _shared(args, strategy: str, out: Path) -> tuple[dict, float]:
    db = out.with_suffix(".db")
    _fresh(out, db)
    t0 = time.perf_counter()
    search = subprocess.Popen([sys.executable, "-m", "naskd", *_flags(args, strategy, out), "--storage",
                               f"sqlite:///{db}"], env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    while not (out / "config.yaml").is_file():
        if search.poll() is not None:
            raise SystemExit(f"{strategy} with --storage failed:\n{search.stderr.read()[-2000:]}")
        time.sleep(0.5)
    workers = [subprocess.Popen([sys.executable, "-m", "naskd", "worker", str(out)], env=_env(1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(args.workers)]
    err = search.communicate()[1]
    if search.returncode != 0:
        raise SystemExit(f"{strategy} with --storage failed:\n{err[-2000:]}")
    wall = time.perf_counter() - t0
    for w in workers:
        if w.wait() != 0:
            raise SystemExit(f"a worker of {strategy} failed:\n{w.stderr.read()[-2000:]}")
    return json.loads((out / "metrics.json").read_text()), wall


def _phase(m: dict) -> float:
    """Seconds of the phase the workers share: random's whole run, spos' discrete search."""
    return m.get("discrete_search_seconds_this_process", m["wall_seconds_this_process"])


def run(args) -> None:
    root = Path(args.root)
    rows = []
    n = args.workers + 1
    for strategy in args.strategies:
        one, one_wall = _one(args, strategy, root / f"{strategy}-one")
        many, many_wall = _shared(args, strategy, root / f"{strategy}-w{n}")
        rows.append({"strategy": strategy, "evaluated": many["evaluated"],
                     f"wall s, 1 process x {args.threads_one} threads": one_wall,
                     f"wall s, {n} processes x 1 thread": many_wall,
                     "wall ratio (>1: shared faster)": one_wall / many_wall,
                     "shared phase s, 1 process": _phase(one), f"shared phase s, {n} processes": _phase(many),
                     "phase ratio": _phase(one) / _phase(many),
                     "candidates per process": ", ".join(str(v) for v in sorted(many["evaluated_by"].values())),
                     "same pick": one["pick"]["text"] == many["pick"]["text"]})
    publish(args.table, f"Search on SST-2: one process ({args.threads_one} thread(s)) against a search sharing its "
            "candidates with `naskd worker` processes (--storage)", rows, list(rows[0]),
            notes=(f"Macro space, {args.max_train_examples:,} SST-2 training rows, {args.epochs} epoch(s); random "
                   f"trains {args.candidates} candidates standalone, spos trains its supernet in the search process and "
                   f"shares {args.trials} NSGA-II trials; the shared runs' processes use one SQLite study "
                   f"(Optuna heartbeats, stale trials retried). Teacher `{Path(args.teacher).name}`. The shared phase "
                   "is random's whole run and spos' discrete search."))
