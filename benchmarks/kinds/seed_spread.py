"""How far one retraining moves a student's SST-2 dev accuracy: the same student retrained with several
seeds (the students_sst2 kind's `train_seed`), against the teacher and the baselines of the same study.

Each finished seed gets a row (best epoch on dev, counted from 1; teacher - it as a paired-bootstrap interval); the "seed mean"
row scores each dev sentence by the fraction of seeds that got it right, so its intervals are those of the
expected accuracy of one retraining (paired over sentences, the seeds averaged inside each pair). The
comparison rows use that seed mean against each baseline's single run.

The studies: `python benchmarks/run.py seed_spread_sst2_<tag>[-<variant>]` (benchmarks/studies/; parameters
tag, seeds, variant), each writing benchmarks/results/seed_spread_sst2_<tag>[-<variant>].{md,json}
       (reads runs/sst2-students/searched-<tag><variant>[-s<S>]; seed 0 is the run without a suffix)
       variant=V: the searched student of a recipe variant (e.g. V = ema0.999: the runs -ema0.999 of the
       students_sst2 kind with `ema: 0.999`), each seed also compared with the plain recipe's run of the same
       seed (same initial weights and batch order), and the two seed means with each other; a baseline
       with a run of the variant (e.g. random-0-<tag>-ema0.999) is read from it
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common import DATA_DIR, Evidence, publish, study_command

from naskd.data.readers import read_columns
from naskd.data.tasks import get_task
from naskd.stats import paired_bootstrap


RAW_BEST = "raw weights' best in this run"
PARAMS = {
    "tag": ("allx8of200k-aug-kd-logit_mse", "the study's run tag"),
    "seeds": ([0, 1, 2], "training seeds of the searched student"),
    "runs": ("runs/sst2-students", "where the students' runs are"),
    "teacher": ("runs/sst2-teacher", "the teacher run"),
    "baselines": (["bilstm-150-200", "random-0", "random-1", "random-2", "truncated-3"],
                  "run-name prefixes of the baselines (each <prefix>-<tag>)"),
    "variant": ("", "a recipe variant's run-name suffix without its dash, e.g. ema0.999 for the runs of the "
                    "students_sst2 kind with ema 0.999"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def interval(b: dict) -> str:
    return f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def verdict(b: dict, first: str, second: str) -> str:
    return f"{first} better" if b["low"] > 0 else f"{second} better" if b["high"] < 0 else "not distinguishable"


def run(args) -> None:
    args.variant = f"-{args.variant.lstrip('-')}" if args.variant else ""
    root = Path(args.runs)
    seeds = [int(s) for s in args.seeds]
    spec = get_task("sst2")
    gold = np.asarray(read_columns(spec, args.data_dir, "dev")["label"])

    ev = Evidence()           # finished runs' dev predictions, committed: the runs' directories may be gone
    read = {}                 # run directory -> its metrics, for the record

    def correct(run: Path) -> np.ndarray:
        return (ev.labels(run, len(gold)) == gold).astype(float)

    def finished(run: Path) -> bool:
        """A run whose training ended: a stopped one has dev logits of its best epoch so far, not of its run."""
        m = ev.metrics(run)
        if m is not None:
            read[run] = m
        return m is not None

    t_labels = ev.labels(Path(args.teacher), len(gold), finished=False)
    teacher = (t_labels == gold).astype(float)
    rows, per_seed, done, missing = [{"model": "teacher", "dev accuracy": float(teacher.mean())}], [], [], []
    plain_of, paired = {}, []

    def searched(s: int, variant: str) -> Path:
        return root / (f"searched-{args.tag}{variant}" + (f"-s{s}" if s else ""))

    for s in seeds:
        run = searched(s, args.variant)
        if not finished(run):
            missing.append(f"seed {s} ({run})")
            continue
        m = read[run]
        c = correct(run)
        per_seed.append(c)
        done.append(s)
        b = paired_bootstrap(teacher, c)
        row = {"model": f"searched{args.variant}, seed {s}", "dev accuracy": float(c.mean()),
               "best epoch": m["dev"]["epoch"] + 1, "teacher - this (95% CI)": interval(b)}
        raw = [h["raw_accuracy"] for h in m.get("history", []) if "raw_accuracy" in h]
        if raw:                       # a weight-averaged run also scored its raw weights: the same trajectory
            row[RAW_BEST] = f"{max(raw):.4f} (epoch {int(np.argmax(raw)) + 1})"
        plain = searched(s, "")
        if args.variant and finished(plain):
            plain_of[s] = correct(plain)
            paired.append(s)
            row["variant - plain, same seed (95% CI)"] = interval(paired_bootstrap(c, plain_of[s]))
        rows.append(row)
    if not per_seed:
        sys.exit("no finished seed of the searched student: " + "; ".join(missing))
    accs = np.array([c.mean() for c in per_seed])
    mean = np.mean(per_seed, axis=0)
    b = paired_bootstrap(teacher, mean)
    rows.append({"model": f"searched{args.variant}, mean of {len(per_seed)} seeds", "dev accuracy": float(accs.mean()),
                 "best epoch": f"sd {accs.std(ddof=1):.4f}" if len(accs) > 1 else "",
                 "teacher - this (95% CI)": interval(b)})
    if paired:                        # the two recipes over the seeds both have, each seed paired with itself
        var_mean = np.mean([per_seed[done.index(s)] for s in paired], axis=0)
        plain_mean = np.mean([plain_of[s] for s in paired], axis=0)
        b = paired_bootstrap(var_mean, plain_mean)
        rows.append({"model": f"searched (plain recipe), mean of seeds {', '.join(map(str, paired))}",
                     "dev accuracy": float(plain_mean.mean()),
                     "teacher - this (95% CI)": interval(paired_bootstrap(teacher, plain_mean)),
                     "variant - plain, same seed (95% CI)": interval(b),
                     "verdict": verdict(b, "variant", "plain")})
    comparisons = []
    for prefix in args.baselines:
        run = root / f"{prefix}-{args.tag}"
        if args.variant and finished(root / f"{prefix}-{args.tag}{args.variant}"):
            run, prefix = root / f"{prefix}-{args.tag}{args.variant}", prefix + args.variant   # same recipe
        if not finished(run):
            missing.append(f"baseline {prefix} ({run})")
            continue
        c = correct(run)
        b = paired_bootstrap(mean, c)
        comparisons.append({"model": prefix, "dev accuracy": float(c.mean()),
                            "seed mean - this (95% CI)": interval(b), "verdict": verdict(b, "searched", "this")})
    command = study_command()
    gap = float(teacher.mean() - accs.mean())
    ev.record(Path(args.teacher), t_labels, command=f"naskd teacher --task sst2 --out {args.teacher}")
    stored = [r.name for r in read if ev.from_store(r)]
    other_teacher = [name for name in stored if ev.teacher_differs(root / name, t_labels)]
    for r, m in read.items():
        if not ev.from_store(r):
            ev.record(r, ev.labels(r, len(gold)), metrics=m, teacher_labels=t_labels)
    ev.save()
    columns = ["model", "dev accuracy", "best epoch", "teacher - this (95% CI)"]
    columns += ["variant - plain, same seed (95% CI)"] if paired else []
    columns += [RAW_BEST] if any(RAW_BEST in r for r in rows) else []
    publish(f"seed_spread_sst2_{args.tag}{args.variant}",
            f"SST-2: the searched student{f' ({args.variant[1:]})' if args.variant else ''} retrained with "
            f"{len(per_seed)} seeds ({args.tag})",
            rows + comparisons, columns + ["seed mean - this (95% CI)", "verdict"], command,
            notes=(f"Seeds {', '.join(map(str, done))}: weights, "
                   "dropout and batch order change, the training rows do not. Spread of the best-epoch dev "
                   f"accuracy: {accs.min():.4f} to {accs.max():.4f}; the seed mean is {gap * 100:.2f} points under "
                   "the teacher. Baselines: one run each (seed 0). Intervals: paired bootstrap over the 872 dev "
                   "sentences (10,000 resamples)."
                   + (" A plain run of the same seed starts from the same weights and batch order; a plain run "
                      "trained before an op changed its floating-point order follows another trajectory (compare "
                      "its curve with the raw weights' scores in this run's metrics.json), so the raw weights' best "
                      "of the same run is the exact control (its dev accuracy only)."
                      if paired else "")
                   + (f" Not finished: {'; '.join(missing)}." if missing else "")
                   + (f" Read from the committed dev predictions (benchmarks/results/{ev.path.name}; their run "
                      f"directories are gone): {', '.join(stored)}." if stored else "")
                   + (f" Distilled from a teacher run whose dev predictions differ from {args.teacher}'s: "
                      f"{', '.join(other_teacher)}." if other_teacher else "")))
