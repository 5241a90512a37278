"""Searched students against the baselines at matched speed (issue 21, protocol 3).

For each baseline B (Tang et al.'s `bilstm_soft` 150/200; the teacher's first k layers, `truncated_teacher`
k = 1 and 3):

1. B is retrained on the shared recipe's data and budget (``augmented``, ``epochs`` x ``epoch_examples``
   rows; B's own published optimiser and rates, `--kd logit_mse`, `--keep last`: dev chooses nothing).
2. `naskd bench` times B and the teacher in one run (``threads``, batch 128, PyTorch); B's throughput
   relative to the teacher's is the constraint S_B.
3. The spos pick at S_B is derived from the front of an unconstrained spos run (`naskd derive RUN --speedup
   S_B`: the most accurate architecture on the selection split at least that fast), and a `random` search
   runs under the same constraint (the strategy_budget recipe: 9 candidates x 20,000 rows x 2 epochs).
   A `hyperband` search (the fallback the ranking study's verdict names: TPE proposals trained standalone,
   pruned by Hyperband; each candidate up to 20,000 rows x 2 epochs, its default budget) runs under it too.
4. The picks are retrained with the same data, budget and criteria as B (retrain's default AdamW recipe for
   a genotype), ``seeds`` training seeds each, as is B.

The table: dev accuracy seed means of B and of each pick; paired-bootstrap 95% intervals of the differences
of seed-mean correctness over the dev sentences (each searched pick - B, each searched pick - the random
pick, the random pick - B).

The study: `python benchmarks/run.py matched_speed_sst2 [--set lane=I/N] [--only table]` (benchmarks/studies/;
one thread).

Jobs run in a fixed order, baseline by baseline (B's first seed, its bench, the searches, then every student
seed by seed); `--set lane=I/N` takes every N-th job from the I-th (0-based), so two one-thread processes share
the list, and a job whose inputs are not ready yet is skipped and tried again on the next pass (every 5 minutes
while another lane runs; `--set wait=false`: one pass). Every job resumes from its last checkpoint, whichever
lane ran it before: restart every lane together after the list changes (never two code versions at once, or
two lanes could take the same job). B's bench stops the other lanes (SIGSTOP) while it times and continues
them after, so the constraint is the machine's, not a busy machine's. Writes
benchmarks/results/matched_speed_sst2.{md,json}; finished runs' dev predictions go to
benchmarks/results/dev_predictions_sst2.json.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from common import (DATA_DIR, REQUIRED, RESULTS, Evidence, load_json, markdown_table, retrain_once, run_naskd,
                    study_command)

BASELINES = {
    "bilstm-150-200": {"student": "bilstm_soft", "bilstm_hidden": 150, "bilstm_relu": 200},
    "truncated-1": {"student": "truncated_teacher", "truncate_k": 1},
    "truncated-3": {"student": "truncated_teacher", "truncate_k": 3},
}
WAIT_S = 300
WHO = ("baseline", "spos", "random", "hyperband")
PARAMS = {
    "teacher": (REQUIRED, "the SST-2 teacher run every student distils from"),
    "augmented": (REQUIRED, "a `naskd augment` run labelled by teacher"),
    "spos_run": (REQUIRED, "an unconstrained spos search of the macro space"),
    "root": (REQUIRED, "where the retrains, benches and searches go (resumed when there)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "baselines": (list(BASELINES), f"the baselines B (of {', '.join(BASELINES)})"),
    "seeds": ([0, 1], "training seeds of every student"),
    "epochs": (8, "epochs of every retrain"),
    "epoch_examples": (200000, "rows per epoch of every retrain"),
    "threads": (1, "threads of the bench and the constraint"),
    "lane": (None, "I/N: every N-th job from the I-th"),
    "wait": (True, "pass over the jobs again while some wait for another lane's outputs"),
    "only": (None, "table: no job, the table only"),
}


class Lanes:
    """Which lanes of the study run now: each lane keeps ROOT/.lanes/I-of-N.pid (its process id) while it runs,
    so a lane whose jobs wait for another lane's outputs stops waiting once no other lane is alive (a crashed
    lane does not leave it polling for ever)."""

    def __init__(self, root: Path, lane: str | None):
        self.dir = root / ".lanes"
        self.me = None
        if lane:
            i, n = lane.split("/")
            self.me = self.dir / f"{i}-of-{n}.pid"
            self.dir.mkdir(parents=True, exist_ok=True)
            self.me.write_text(str(os.getpid()))

    def others_alive(self) -> list[str]:
        """The other lanes (I/N) whose recorded process is still running."""
        out = []
        for f in sorted(self.dir.glob("*.pid")) if self.dir.is_dir() else []:
            if f == self.me:
                continue
            try:
                os.kill(int(f.read_text()), 0)
            except (ValueError, ProcessLookupError):
                continue
            except PermissionError:            # alive, another user's
                pass
            out.append(f.stem.replace("-of-", "/"))
        return out

    @contextlib.contextmanager
    def others_held(self):
        """The other live lanes stopped (SIGSTOP) inside, continued (SIGCONT) after, whatever happened (SIGTERM
        included; a SIGKILL leaves them stopped: `kill -CONT` them): a bench timed while another lane trains is
        not the machine's (B's speed came out 18.8x for 33.2x quiet). One lane at a time holds the others (a lock
        in ROOT/.lanes), so two benching lanes never stop each other; a pid file whose process is not a lane of
        this study (a crashed lane's pid reused) is left alone."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "hold.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held = []
            previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            try:
                for f in sorted(self.dir.glob("*.pid")):
                    try:
                        pid = int(f.read_text())
                        if f == self.me or "matched_speed" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                                errors="replace"):
                            continue
                        os.kill(pid, signal.SIGSTOP)
                    except (ValueError, OSError):     # gone, unreadable, or not ours to stop
                        continue
                    held.append(pid)
                yield held
            finally:
                for pid in held:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                signal.signal(signal.SIGTERM, previous)

    def leave(self) -> None:
        if self.me is not None and self.me.is_file() and self.me.read_text() == str(os.getpid()):
            self.me.unlink()


def command() -> str:
    """The study's command without its lane or wait setting (the table is the same whichever lane writes it)."""
    return re.sub(r" --set '?(lane|wait)=[^ ]*", "", study_command())


def interval(b: dict) -> str:
    return f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def verdict(b: dict, first: str, second: str) -> str:
    return f"{first} better" if b["low"] > 0 else f"{second} better" if b["high"] < 0 else "not distinguishable"


class Study:
    def __init__(self, args):
        self.a = args
        self.root = Path(args.root)
        self.lanes = Lanes(self.root, None)      # this process's lane, once it has one (run())
        self.base = {"task": "sst2", "teacher": args.teacher, "data_dir": args.data_dir, "epochs": args.epochs,
                     "epoch_examples": args.epoch_examples, "augmented": args.augmented, "kd": "logit_mse",
                     "keep": "last"}

    # --- paths -----------------------------------------------------------------------------------
    def run(self, who: str, b: str, seed: int) -> Path:
        return self.root / (f"matched-{b}-s{seed}" if who == "baseline" else f"matched-{who}-{b}-s{seed}")

    def bench_dir(self, b: str) -> Path:
        return self.root / f"bench-{b}"

    def genotype(self, who: str, b: str) -> Path:
        return self.root / (f"spos-pick-{b}.json" if who == "spos" else f"{who}-{b}/genotype.json")

    @staticmethod
    def finished(run: Path) -> bool:
        m = load_json(run / "metrics.json")
        return m is not None and m.get("status") == "finished"

    # --- jobs ------------------------------------------------------------------------------------
    def jobs(self) -> list:
        """Baseline by baseline (each one's table rows complete before the next one's start): B's first seed, its
        bench, the spos derivation, the random and hyperband searches, the picks' first seeds, then every
        student's further seeds."""
        seeds = [int(s) for s in self.a.seeds]
        out = []
        for b in self.a.baselines:
            out.append((f"baseline {b} seed {seeds[0]}", lambda b=b: self.train("baseline", b, seeds[0])))
            out.append((f"bench {b}", lambda b=b: self.bench(b)))
            out.append((f"spos pick at {b}'s speed", lambda b=b: self.derive(b)))
            for strategy in ("random", "hyperband"):
                out.append((f"{strategy} search at {b}'s speed", lambda b=b, st=strategy: self.search(st, b)))
            for s in seeds:
                for who in WHO:
                    if (who, s) != ("baseline", seeds[0]):
                        out.append((f"{who} {b} seed {s}", lambda b=b, who=who, s=s: self.train(who, b, s)))
        return out

    def train(self, who: str, b: str, seed: int) -> bool:
        out = self.run(who, b, seed)
        if who == "baseline":
            flags = {**self.base, **BASELINES[b], "seed": seed}
        else:
            g = self.genotype(who, b)
            if not g.is_file():
                return False
            flags = {**self.base, "student": "genotype", "genotype": str(g), "seed": seed}
        retrain_once(out, flags)
        return True

    def speedup(self, b: str) -> float | None:
        doc = load_json(self.bench_dir(b) / "bench.json")
        if doc is None:
            return None
        row = next(r for r in doc["rows"] if r["role"] != "teacher")
        return float(row["torch x throughput"])

    def constraint(self, b: str) -> float | None:
        """The speed S_B the searches of B ran under: B's bench when its directory is here, else the value the
        committed table recorded from it (the bench directory is gone with the machine)."""
        s = self.speedup(b)
        if s is not None:
            return s
        old = load_json(RESULTS / "matched_speed_sst2.json") or {}
        recorded = [r.get("constraint S_B (x teacher)", r.get("B's speed (x teacher)")) for r in old.get("rows", [])
                    if r.get("baseline B") == b]     # the column's name before this table showed quiet speeds too
        return next((v for v in recorded if v not in (None, "")), None)

    def bench(self, b: str) -> bool:
        from naskd.bench import run_bench

        if self.speedup(b) is not None:
            return True
        first = self.run("baseline", b, int(self.a.seeds[0]))
        if not self.finished(first):
            return False
        with self.lanes.others_held() as held:
            if held:
                print(f"[matched] bench {b}: lane process(es) {', '.join(map(str, held))} stopped while it times",
                      flush=True)
            res = run_bench([str(first / "student"), self.a.teacher], data_dir=self.a.data_dir,
                            out=str(self.bench_dir(b)), onnx=False, threads=self.a.threads,
                            overwrite=self.bench_dir(b).exists())
        if res.get("busy"):           # not the machine's speed: no constraint from it; timed again on the next pass
            shutil.rmtree(self.bench_dir(b))
            print(f"[matched] bench {b}: other processes kept the machine busy while it timed; it is timed again on "
                  "the next pass (stop what else runs)", flush=True)
            return False
        return True

    def derive(self, b: str) -> bool:
        s = self.speedup(b)
        if s is None:
            return False
        g = self.genotype("spos", b)
        if not g.is_file():
            run_naskd(["derive", self.a.spos_run, "--speedup", f"{s:.4f}", "-o", str(g)])
        return True

    def search(self, strategy: str, b: str) -> bool:
        """A `random` (9 candidates) or `hyperband` (its default budget) search of the macro space at B's
        speed, each candidate up to 20,000 rows x 2 epochs; False while B's bench is missing."""
        s = self.speedup(b)
        if s is None:
            return False
        out = self.root / f"{strategy}-{b}"
        if self.finished(out):
            return True
        argv = ["search", "--task", "sst2", "--strategy", strategy, "--space", "macro", "--teacher", self.a.teacher,
                "--data-dir", self.a.data_dir, "--speedup", f"{s:.4f}", "--candidate-rows", "20000", "--epochs", "2",
                "--latency-threads", str(self.a.threads), "--out", str(out)]
        if strategy == "random":
            argv[-2:-2] = ["--candidates", "9"]
        run_naskd(argv, out)
        return True

    # --- the table -------------------------------------------------------------------------------
    def table(self) -> None:
        from naskd.data.readers import read_columns
        from naskd.data.tasks import get_task
        from naskd.stats import paired_bootstrap

        spec = get_task("sst2")
        gold = np.asarray(read_columns(spec, self.a.data_dir, "dev")["label"])
        ev = Evidence()
        t_labels = None
        if (Path(self.a.teacher) / "dev_logits.npy").is_file():
            t_labels = ev.labels(Path(self.a.teacher), len(gold), finished=False)
        seeds = [int(s) for s in self.a.seeds]
        rows, comparisons, missing = [], [], []
        cmd = command()
        quiet = quiet_speeds()
        for b in self.a.baselines:
            s_b = self.constraint(b)
            b_quiet = quiet.get(b)
            correct, faster = {}, {}
            for who in WHO:
                cs = []
                for seed in seeds:
                    run = self.run(who, b, seed)
                    m = ev.metrics(run)
                    if m is None:
                        missing.append(run.name)
                        continue
                    desc = m.get("description", "")
                    labels = ev.labels(run, len(gold))
                    if not ev.from_store(run):
                        if t_labels is None:
                            raise SystemExit(f"{run} finished, but the teacher {self.a.teacher} has no dev_logits.npy "
                                             "to record beside it")
                        ev.record(run, labels, metrics=m, teacher_labels=t_labels, command=cmd)
                    cs.append((labels == gold).astype(float))
                if not cs:
                    continue
                correct[who] = np.mean(cs, axis=0)
                accs = [c.mean() for c in cs]
                what = b if who == "baseline" else desc.removeprefix("genotype ") or "(no description recorded)"
                speed = quiet.get(b if who == "baseline" else f"{who} pick at {b}'s speed")
                if who != "baseline" and speed is not None and b_quiet is not None:
                    faster[who] = speed >= b_quiet
                rows.append({"baseline B": b, "constraint S_B (x teacher)": s_b if s_b is not None else "",
                             "student": f"{who}: {what}", "speed, quiet (x teacher)": speed if speed else "",
                             "seeds": len(cs), "dev mean": float(np.mean(accs)),
                             "sd": float(np.std(accs, ddof=1)) if len(cs) > 1 else ""})
            for first, second in (("spos", "baseline"), ("spos", "random"), ("hyperband", "baseline"),
                                  ("hyperband", "random"), ("random", "baseline")):
                if first in correct and second in correct:
                    bt = paired_bootstrap(correct[first], correct[second])
                    v = verdict(bt, first, second)
                    slow = [w for w in (first, second) if faster.get(w) is False]
                    if slow:
                        v += f" ({' and '.join(slow)} pick slower than B, quiet: not at B's speed)"
                    comparisons.append({"baseline B": b, "comparison": f"{first} pick - {second}",
                                        "difference (95% CI)": interval(bt), "verdict": v})
        ev.save()
        text = "\n".join([
            "## Searched students against the baselines at matched speed (SST-2)", "", f"Made with `{cmd}`.", "",
            (f"Every student on the same data and budget: `--augmented {Path(self.a.augmented).name} --epochs "
             f"{self.a.epochs} --epoch-examples {self.a.epoch_examples} --kd logit_mse --keep last` (the last epoch "
             "scored: dev chooses nothing); baselines with their published optimisers, picks with retrain's "
             "default. Constraint S_B: `naskd bench` of B and the teacher in one run, batch-128 PyTorch throughput "
             f"at {self.a.threads} thread(s), taken while other training ran. spos picks derived from "
             f"`{self.a.spos_run}` (unconstrained front) at S_B; random picks from a random search under the same "
             "constraint (9 candidates x 20,000 rows x 2 epochs); hyperband picks from a hyperband search under it "
             "(TPE proposals, each up to 20,000 rows x 2 epochs, Hyperband pruning, its default budget: the "
             "fallback the ranking study names). Speed, quiet: every student's architecture and the teacher's timed "
             "together on a quiet machine (pareto_sst2, one thread); where it differs from S_B, the constraint was "
             "measured wrong under load, and a pick slower than B there is not a matched comparison."), "",
            markdown_table(rows, ["baseline B", "constraint S_B (x teacher)", "student", "speed, quiet (x teacher)",
                                  "seeds", "dev mean", "sd"]), "",
            markdown_table(comparisons, ["baseline B", "comparison", "difference (95% CI)", "verdict"]), "",
            "Intervals: paired bootstrap over the 872 dev sentences of seed-mean correctness (10,000 resamples)."
            + (f" Not in the record (not run yet, or lost unfinished with a machine): {', '.join(missing)}."
               if missing else ""), ""])
        from naskd.utils.io import write_json, write_text

        write_text(RESULTS / "matched_speed_sst2.md", text)
        write_json(RESULTS / "matched_speed_sst2.json", {"command": cmd, "rows": rows,
                                                           "comparisons": comparisons, "missing": missing})
        print(text)


def quiet_speeds() -> dict:
    """{student label of pareto_sst2 (``bilstm-150-200``, ``random pick at truncated-1's speed``): its batch-128
    throughput relative to the teacher's}, from the committed quiet bench (empty before it has run)."""
    doc = load_json(RESULTS / "pareto_sst2.json") or {}
    return {r["student"]: float(r["speed (x teacher)"]) for r in doc.get("rows", [])}


def run(args) -> None:
    if args.only not in (None, "table"):
        raise SystemExit(f"only={args.only!r}: table (or none)")
    for k in ("baselines", "seeds"):     # one value given alone (--set seeds=1) is a list of one
        v = getattr(args, k)
        setattr(args, k, v.split(",") if isinstance(v, str) else [v] if isinstance(v, int) else list(v))
    for k in ("teacher", "augmented", "spos_run", "root"):
        setattr(args, k, str(Path(getattr(args, k)).expanduser()))
    unknown = [b for b in args.baselines if b not in BASELINES]
    if unknown:
        raise SystemExit(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINES)}")
    study = Study(args)
    if args.only != "table":
        jobs = study.jobs()
        if args.lane:
            i, n = (int(x) for x in args.lane.split("/"))
            jobs = jobs[i::n]
        lanes = study.lanes = Lanes(study.root, args.lane)
        while True:
            waiting = []
            for name, job in jobs:
                print(f"[matched] {name}", flush=True)
                if not job():
                    waiting.append(name)
                    print(f"[matched] {name}: its inputs are not ready; skipped for now", flush=True)
            if not waiting or not args.wait:
                break
            others = lanes.others_alive()
            if not others:
                print(f"[matched] {'; '.join(waiting)}: their inputs come from jobs of another lane, and no other "
                      f"lane runs; start every lane again (their finished jobs are skipped)", flush=True)
                break
            # another lane makes the inputs (a baseline's first seed, a search): pass over the list again
            print(f"[matched] waiting for the inputs of {'; '.join(waiting)} (lane(s) {', '.join(others)} make "
                  f"them); the next pass in {WAIT_S} s", flush=True)
            time.sleep(WAIT_S)
        lanes.leave()
    study.table()

