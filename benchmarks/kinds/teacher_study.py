"""Issue 23's study: which teacher naskd can make for SST-2 on this machine, and at what cost.

Rows, each one teacher run under RUNS (resumable: a finished run is read, a stopped one resumed):
- ``default-sS``: `naskd teacher` with the committed recipe (teachers/sst2.yaml), one per seed of ``seeds``;
- ``ensemble-default``: `naskd teacher --ensemble` of those (outputs are the members' mean logits);
- ``tune``: `naskd tune --stage teacher` (Optuna TPE, median pruning twice an epoch), each trial fine-tuned
  on a seeded ``tune_max_train_examples``-row subsample and chosen on a selection split carved from it,
  never on dev; its trials go to a second table;
- ``tuned-sS``: the study's best recipe on the whole training split, one per seed of ``tuned_seeds``;
- ``born-again``: `naskd teacher --distill-from default-sFIRST` (Furlanello et al. 2018): the base encoder
  fine-tuned again on the first default teacher's outputs (``distill_kd``) over the training split; with
  ``augment_rows`` N > 0 also ``born-again-augN``: the same on a seeded N-row subsample and its `naskd augment`
  sentences labelled by that teacher (``augment-N``).

Report: dev accuracy of each, a paired bootstrap against ``default-sFIRST`` (the recipe's own teacher), the
training minutes and the forward passes a labelled sentence costs (an ensemble of N: N). Dev predictions
are recorded in results/dev_predictions_sst2.json, so the table is rebuilt when the runs are gone.

  OMP_NUM_THREADS=2 python benchmarks/run.py teacher_study_sst2              # every stage, then the table
  python benchmarks/run.py teacher_study_sst2 --only report                 # the table from finished runs
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import DATA_DIR, Evidence, load_json, publish, study_command

STAGES = ("seeds", "ensemble", "tune", "tuned", "distill", "report")
PARAMS = {
    "runs": ("runs/sst2-teacher-study", "where the teacher runs and the tuning study go (resumed when there)"),
    "teacher": (None, "the base encoder (default: the recipe's, all-MiniLM-L6-v2)"),
    "seeds": ([42, 43, 44], "seeds of the committed recipe's teachers (the first is the reference row)"),
    "tune_trials": (12, "trials of the tuning study"),
    "tune_max_train_examples": (20000, "the seeded training subsample each tuning trial fine-tunes on "
                                       "(null: the whole split)"),
    "tune_selection_examples": (5000, "rows carved that choose and prune (never dev)"),
    "tune_selection_from": ("rows", "how they are carved: rows (at random from the subsample) or sentences (whole "
                                    "rows of the whole split, the rows inside them kept out of training; "
                                    "naskd/data/selection.py); sentences runs its own study and tuned teachers"),
    "tuned_seeds": ([42], "seeds of the teachers fine-tuned with the tuning study's best recipe"),
    "distill_kd": ("soft_ce=1", "the born-again criteria (`naskd teacher --kd`)"),
    "augment_rows": (0, "also a born-again teacher on a seeded N-row subsample and its augmentation (0: not)"),
    "max_train_examples": (None, "every fine-tuning's training subsample besides the tuning study's (quick runs)"),
    "epochs": (None, "every fine-tuning's epochs (default: the recipe's; the tuning study draws its own)"),
    "only": ("", f"one stage: {', '.join(STAGES)} (default: all, in that order)"),
    "table": ("teacher_study_sst2", "the table's name (its trials: NAME_tune)"),
    "data_dir": (DATA_DIR, "the data folder"),
}
REFERENCE_METRIC = "accuracy"


def common_flags(args) -> dict:
    flags = {"task": "sst2", "data_dir": args.data_dir}
    for key in ("teacher", "max_train_examples", "epochs"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    return flags


def finished(run: Path) -> dict | None:
    m = load_json(run / "metrics.json")
    return m if m is not None and m.get("status") == "finished" else None


def teacher_once(run: Path, flags: dict) -> dict:
    """`naskd teacher` into ``run``: read when finished, resumed when stopped, started when absent (or left
    before its first checkpoint)."""
    from naskd.cli import main

    m = finished(run)
    if m is not None:
        return m
    argv = ["teacher", *[x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))], "--out", str(run)]
    resume = (run / "checkpoint.pt").is_file()
    if resume:
        argv.append("--resume")
    elif run.is_dir() and any(run.iterdir()):
        argv.append("--overwrite")       # stopped before its first checkpoint: nothing to keep
    code = main(argv)
    if code != 0:
        raise SystemExit(f"naskd {' '.join(argv)} exited with {code}")
    return finished(run)


def default_dirs(args) -> list[Path]:
    return [Path(args.runs) / f"teacher-default-s{s}" for s in args.seeds]


def stage_seeds(args) -> None:
    for run, seed in zip(default_dirs(args), args.seeds):
        teacher_once(run, {**common_flags(args), "seed": seed})


def stage_ensemble(args) -> None:
    from naskd.teachers.ensemble import make_ensemble

    members = default_dirs(args)
    out = Path(args.runs) / "teacher-ensemble-default"
    if len(members) < 2 or finished(out) is not None:
        return
    make_ensemble([str(m) for m in members], out, task="sst2", data_dir=args.data_dir,
                  overwrite=out.is_dir() and any(out.iterdir()))


def tune_tag(args) -> str:
    """"" for the first study (random rows), "-sentences" for the study choosing on whole rows."""
    return "" if args.tune_selection_from == "rows" else f"-{args.tune_selection_from}"


def tune_dir(args) -> Path:
    return Path(args.runs) / f"tune{tune_tag(args)}"


def stage_tune(args) -> dict:
    from naskd.tune import run_tune

    root = tune_dir(args)
    done = load_json(root / "tune.json")
    if done is not None and len([t for t in done["trials"] if t["state"] != "RUNNING"]) >= args.tune_trials:
        return done
    base = {k: v for k, v in common_flags(args).items() if k not in ("max_train_examples", "epochs")}
    if args.tune_max_train_examples is not None:
        base["max_train_examples"] = args.tune_max_train_examples
    base["selection_examples"] = args.tune_selection_examples
    if args.tune_selection_from != "rows":          # the first study's settings stay as they were recorded
        base["selection_from"] = args.tune_selection_from
    return run_tune(base, trials=args.tune_trials, out=str(root), storage=f"sqlite:///{root.resolve()}.db",
                    study_name=f"naskd-teacher-study{tune_tag(args)}", stage="teacher",
                    resume=(root / "naskd-run.json").is_file())


def tuned_recipe(args) -> dict | None:
    """The settings the tuning study chose (its best trial's draws), or None before it has finished."""
    done = load_json(tune_dir(args) / "tune.json")
    if done is None:
        return None
    best = next(t for t in done["trials"] if t["number"] == done["best_trial"])
    return dict(best["params"])


def stage_tuned(args) -> None:
    recipe = tuned_recipe(args)
    if recipe is None:
        raise SystemExit("the tuning study has not finished: run the stage tune first")
    for seed in args.tuned_seeds:
        flags = {**common_flags(args), **recipe, "seed": seed}
        if args.epochs is not None:
            flags["epochs"] = args.epochs
        teacher_once(Path(args.runs) / f"teacher-tuned{tune_tag(args)}-s{seed}", flags)


def stage_distill(args) -> None:
    from naskd.augment.run import resolve_augment_config, run_augment

    source = default_dirs(args)[0]
    if finished(source) is None:
        raise SystemExit(f"{source} has not finished: run the stage seeds first")
    flags = {**common_flags(args), "distill_from": str(source), "kd": args.distill_kd, "seed": args.seeds[0]}
    teacher_once(Path(args.runs) / "teacher-born-again", flags)
    if args.augment_rows:
        aug = Path(args.runs) / f"teacher-augment-{args.augment_rows}"
        if finished(aug) is None:
            cfg = resolve_augment_config({"task": "sst2", "teacher": str(source), "data_dir": args.data_dir,
                                          "out": str(aug), "max_train_examples": args.augment_rows,
                                          "kd": args.distill_kd})
            run_augment(cfg, resume=aug.is_dir() and any(aug.iterdir()))
        teacher_once(Path(args.runs) / f"teacher-born-again-aug{args.augment_rows}",
                     {**flags, "augmented": str(aug), "max_train_examples": args.augment_rows})


def rows_of(args) -> list[tuple[str, Path, str, int]]:
    """(teacher, run, how it was made, forward passes per sentence) of every row the study may have."""
    rows = [(f"default recipe, seed {s}", d, "teachers/sst2.yaml", 1) for s, d in zip(args.seeds, default_dirs(args))]
    if len(args.seeds) > 1:
        rows.append((f"ensemble of the {len(args.seeds)} above", Path(args.runs) / "teacher-ensemble-default",
                     "`naskd teacher --ensemble`", len(args.seeds)))
    recipe = tuned_recipe(args)
    shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (recipe or {}).items())
    chosen = "" if args.tune_selection_from == "rows" else " (chosen on whole rows)"
    rows += [(f"tuned recipe{chosen}, seed {s}", Path(args.runs) / f"teacher-tuned{tune_tag(args)}-s{s}", shown, 1)
             for s in args.tuned_seeds]
    rows.append(("born-again (self-distilled)", Path(args.runs) / "teacher-born-again",
                 f"`--distill-from` seed {args.seeds[0]}, `--kd {args.distill_kd}`", 1))
    if args.augment_rows:
        rows.append((f"born-again on {args.augment_rows:,} rows + their augmentation",
                     Path(args.runs) / f"teacher-born-again-aug{args.augment_rows}",
                     f"`--distill-from` seed {args.seeds[0]} `--augmented`", 1))
    return rows


def report(args) -> None:
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.stats import paired_bootstrap

    gold = np.asarray(read_columns(get_task("sst2"), args.data_dir, "dev")["label"])
    ev = Evidence()
    table, missing, reference = [], [], None
    for name, run, how, passes in rows_of(args):
        m = ev.metrics(run)
        if m is None:
            missing.append(name)
            continue
        labels = ev.labels(run, len(gold))
        ev.record(run, labels, metrics=m, command=study_command())
        correct = (labels == gold).astype(float)
        row = {"teacher": name, "how": how, "dev accuracy": float(correct.mean()),
               "forward passes per sentence": passes,
               "train minutes": m["train_seconds"] / 60 if "train_seconds" in m else "",
               "best epoch": m.get("best_epoch", "")}
        if reference is None:
            reference = correct
            row["- reference (95% CI)"] = "reference"
        else:
            b = paired_bootstrap(correct, reference)
            row["- reference (95% CI)"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
            row["verdict"] = ("better" if b["low"] > 0 else "worse" if b["high"] < 0 else "not distinguishable")
        table.append(row)
    ev.save()
    publish(args.table, "Teachers for SST-2: the committed recipe over seeds, their ensemble, a tuned recipe and "
            "self-distillation", table, ["teacher", "how", "dev accuracy", "- reference (95% CI)", "verdict",
                                         "forward passes per sentence", "best epoch", "train minutes"],
            notes="Reference: the first row (the committed recipe's teacher). Intervals: paired bootstrap over the "
                  f"{len(gold)} dev sentences (10,000 resamples). The tuning study chose on a selection split "
                  "carved from its training subsample, never on dev; dev is reported. An ensemble labels a sentence "
                  "with one forward pass per member and trains nothing itself (its cost: its members' train "
                  "minutes)."
                  + (f" Not finished yet (left out): {', '.join(missing)}." if missing else ""))
    done = load_json(tune_dir(args) / "tune.json")
    if done is not None:
        trials = [{"trial": t["number"], "state": t["state"], "selection accuracy": t["value"] if t["value"] is not None
                   else "", "dev accuracy": (t.get("dev") or {}).get(REFERENCE_METRIC, ""),
                   **{k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in t["params"].items()}}
                  for t in done["trials"]]
        keys = sorted({k for t in done["trials"] for k in t["params"]})
        carved = (f"{args.tune_selection_examples:,} rows carved from it" if args.tune_selection_from == "rows" else
                  f"{args.tune_selection_examples:,} whole rows carved from the whole split before it (rows no other "
                  "row contains; the rows inside them kept out of training)")
        publish(f"{args.table}_tune", "`naskd tune --stage teacher` on SST-2: every trial", trials,
                ["trial", "state", "selection accuracy", "dev accuracy", *keys],
                notes=f"Each trial fine-tunes on a seeded {args.tune_max_train_examples or 'whole-split'}-row "
                      f"subsample of train and is scored (and pruned) on {carved}; the best selection accuracy chose trial {done['best_trial']}. Dev accuracy is "
                      "reported beside it, never chosen on.")


def run(args) -> None:
    if args.only and args.only not in STAGES:
        raise SystemExit(f"only={args.only}: a stage is one of {', '.join(STAGES)}")
    for stage in STAGES:
        if args.only in ("", stage):
            {"seeds": stage_seeds, "ensemble": stage_ensemble, "tune": stage_tune, "tuned": stage_tuned,
             "distill": stage_distill, "report": report}[stage](args)
