"""Do spos, hyperband and gdas beat random search at equal budget? (issue 21, protocol 2)

For each strategy and search seed, `naskd search` on the macro space under one constraint (``--speedup``),
then the pick retrained with one recipe for every pick (`naskd retrain --genotype ... --kd logit_mse --keep
last`: the last epoch's weights, so dev chooses nothing) and scored on SST-2 dev. The budgets:

- spos: the supernet trained ``--spos-epochs`` passes over the training rows (the selection split carved out),
  then ``--trials`` NSGA-II evaluations with inherited weights;
- random: ``--candidates`` architectures drawn within the constraint, each trained standalone on
  ``--candidate-rows`` rows x ``--random-epochs`` epochs (the ranking study's recipe), the best on the
  selection split picked. The defaults make its wall-clock about spos' on this CPU; both are in the table.
- hyperband: the same standalone recipe, candidates proposed by TPE and pruned by Hyperband on the selection
  score, until 3 x the supernet's rows are trained (its default budget, about random's rows);
- gdas (the DARTS family on a space of sizes): its supernet and architecture parameters trained
  ``--spos-epochs`` passes (each step one architecture-half and one weight-half batch, so the same rows as
  spos' supernet), then the argmax and up to ``--trials`` draws from the learned distribution scored with
  inherited weights.

darts itself is not run: it searches cell spaces, not the macro space (the table says so).

The table: each run's pick, its selection score, predicted and measured speed, search wall-clock and dev
accuracy; per strategy the seed mean and standard deviation; the relative improvement over random (Yang et
al. 2020: 100 x (mean - random's mean) / random's mean) with a paired-bootstrap 95% interval of the difference
of seed-mean accuracies over the dev sentences (each sentence scored by the fraction of seeds right).

The study: `python benchmarks/run.py strategy_budget_sst2_macro [--only table]` (benchmarks/studies/).
Every step resumes (run the same command again); finished retrains' dev predictions are recorded in
benchmarks/results/dev_predictions_sst2.json. Writes benchmarks/results/strategy_budget_sst2_macro.{md,json}.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common import (DATA_DIR, REQUIRED, RESULTS, Evidence, load_json, markdown_table, retrain_once, run_naskd,
                    study_command)

STRATEGIES = ("spos", "random", "hyperband", "gdas")
PARAMS = {
    "teacher": (REQUIRED, "the SST-2 teacher run every search and retrain distils from"),
    "root": (REQUIRED, "where the searches and retrains go (resumed when there)"),
    "data_dir": (DATA_DIR, "the data folder"),
    "seeds": ([0, 1, 2], "search seeds"),
    "speedup": (20.0, "the constraint: predicted batch-128 throughput relative to the teacher, at one thread"),
    "spos_epochs": (2, "spos' and gdas' supernet epochs"),
    "trials": (200, "spos' NSGA-II trials; gdas' draws"),
    "candidates": (9, "random's candidates"),
    "candidate_rows": (20000, "rows a random or hyperband candidate trains on"),
    "random_epochs": (2, "epochs of a random or hyperband candidate"),
    "retrain_epochs": (6, "epochs of the one retrain recipe of every pick"),
    "only": (None, "one stage only: search, retrain or table (table: no training)"),
}


def interval(b: dict) -> str:
    return f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def search(args, strategy: str, seed: int) -> Path:
    out = Path(args.root) / f"{strategy}-s{seed}"
    m = load_json(out / "metrics.json")
    if m is not None and m.get("status") == "finished":
        return out
    argv = ["search", "--task", "sst2", "--strategy", strategy, "--space", "macro", "--teacher", args.teacher,
            "--data-dir", args.data_dir, "--seed", str(seed), "--speedup", str(args.speedup), "--out", str(out),
            "--latency-threads", "1"]
    if strategy in ("spos", "gdas"):
        argv += ["--epochs", str(args.spos_epochs), "--trials", str(args.trials)]
    elif strategy == "hyperband":         # its default budget: 3 x the supernet's rows, about random's
        argv += ["--epochs", str(args.random_epochs), "--candidate-rows", str(args.candidate_rows)]
    else:
        argv += ["--epochs", str(args.random_epochs), "--candidates", str(args.candidates), "--candidate-rows",
                 str(args.candidate_rows)]
    run_naskd(argv, out)
    return out


def retrain(args, strategy: str, seed: int, run: Path) -> Path:
    out = Path(args.root) / f"budget-{strategy}-s{seed}-retrain"
    retrain_once(out, {"task": "sst2", "student": "genotype", "genotype": str(run / "genotype.json"),
                       "teacher": args.teacher, "data_dir": args.data_dir, "kd": "logit_mse",
                       "epochs": args.retrain_epochs, "keep": "last", "seed": 0})
    return out


def search_seconds(m: dict) -> float:
    """Training plus discrete search (spos, gdas), or the candidates' training (random, hyperband), over every
    process."""
    if m.get("strategy") in ("spos", "gdas"):
        return float(m.get("supernet_seconds", 0.0)) + float(m.get("discrete_search_seconds_this_process",
                                                                   m.get("derivation_seconds_this_process", 0.0)))
    return float(m.get("train_seconds", 0.0))


def table(args, runs: dict) -> None:
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.stats import paired_bootstrap

    spec = get_task("sst2")
    gold = np.asarray(read_columns(spec, args.data_dir, "dev")["label"])
    ev = Evidence()
    teacher_labels = ev.labels(Path(args.teacher), len(gold), finished=False)
    rows = [{"run": "teacher", "dev accuracy": float((teacher_labels == gold).mean())}]
    correct: dict = {s: [] for s in STRATEGIES}
    missing = []
    for (strategy, seed), (srun, rrun) in sorted(runs.items()):
        sm = load_json(srun / "metrics.json")
        rm = ev.metrics(rrun) if rrun is not None else None
        if sm is None or sm.get("status") != "finished" or rm is None:
            missing.append(f"{strategy} seed {seed}")
            continue
        labels = ev.labels(rrun, len(gold))
        if not ev.from_store(rrun):
            ev.record(rrun, labels, metrics=rm, teacher_labels=teacher_labels,
                      command=study_command())
        c = (labels == gold).astype(float)
        correct[strategy].append(c)
        pick = sm["pick"]
        lat = pick.get("latency", {}).get(f"threads_{1}", {})
        rows.append({"run": f"{strategy}, seed {seed}", "pick": pick["text"], "selection": pick["score"],
                     "predicted speedup": pick["speedup"], "measured speedup": lat.get("measured_speedup", ""),
                     "search min": search_seconds(sm) / 60, "dev accuracy": float(c.mean())})
    summary = []
    means = {s: np.mean(v, axis=0) for s, v in correct.items() if v}
    for s, v in correct.items():
        if not v:
            continue
        accs = np.array([c.mean() for c in v])
        row = {"strategy": s, "seeds": len(v), "dev mean": float(accs.mean()),
               "sd": float(accs.std(ddof=1)) if len(v) > 1 else ""}
        if s != "random" and "random" in means:
            r = float(np.mean([c.mean() for c in correct["random"]]))
            row["RI over random %"] = 100 * (row["dev mean"] - r) / r
            b = paired_bootstrap(means[s], means["random"])
            row["mean - random's (95% CI)"] = interval(b)
            row["verdict"] = (f"{s} better" if b["low"] > 0 else "random better" if b["high"] < 0
                              else "not distinguishable")
        summary.append(row)
    summary.append({"strategy": "darts", "seeds": 0, "verdict": "not run: darts searches cell spaces, not macro "
                                                                 "(gdas is the DARTS family's form for it)"})
    ev.save()
    command = study_command()
    text = "\n".join([
        "## Equal budget: spos, hyperband and gdas against random search on the macro space (SST-2)", "",
        f"Made with `{command}`.", "",
        (f"Constraint `--speedup {args.speedup:g}` (predicted batch-128 CPU throughput at one thread, relative to "
         f"the teacher `{Path(args.teacher).name}`). spos: supernet {args.spos_epochs} epochs, {args.trials} NSGA-II "
         f"trials; random: {args.candidates} candidates x {args.candidate_rows} rows x {args.random_epochs} epochs; "
         f"hyperband: TPE proposals, each up to {args.candidate_rows} rows x {args.random_epochs} epochs, Hyperband "
         "pruning every 5,000 rows, 3 x the supernet's rows in all; gdas: supernet and architecture parameters "
         f"{args.spos_epochs} epochs, the argmax and up to {args.trials} draws. "
         f"Every pick retrained with one recipe: `naskd retrain --genotype PICK --kd logit_mse --epochs "
         f"{args.retrain_epochs} --keep last --seed 0` (all SST-2 training rows, the last epoch scored: dev "
         "chooses nothing). Selection = the 5,000-row split carved from train the search chose on."), "",
        markdown_table(rows, ["run", "pick", "selection", "predicted speedup", "measured speedup", "search min",
                              "dev accuracy"]), "",
        markdown_table(summary, ["strategy", "seeds", "dev mean", "sd", "RI over random %",
                                 "mean - random's (95% CI)", "verdict"]), "",
        ("Intervals: paired bootstrap over the 872 dev sentences of the seed-mean correctness (10,000 resamples)."
         + (f" Not finished yet: {', '.join(missing)}." if missing else "")), ""])
    from naskd.utils.io import write_json, write_text

    write_text(RESULTS / "strategy_budget_sst2_macro.md", text)
    write_json(RESULTS / "strategy_budget_sst2_macro.json",
               {"command": command, "rows": rows, "summary": summary, "missing": missing})
    print(text)


def run(args) -> None:
    if args.only not in (None, "search", "retrain", "table"):
        raise SystemExit(f"only={args.only!r}: one of search, retrain, table")
    runs = {}
    for seed in args.seeds:             # seed by seed, so a partial study already compares both strategies
        for strategy in STRATEGIES:
            srun = Path(args.root) / f"{strategy}-s{seed}"
            rrun = Path(args.root) / f"budget-{strategy}-s{seed}-retrain"
            if args.only in (None, "search", "retrain"):
                srun = search(args, strategy, seed)
            if args.only in (None, "retrain"):
                rrun = retrain(args, strategy, seed, srun)
            runs[(strategy, seed)] = (srun, rrun)
    table(args, runs)
