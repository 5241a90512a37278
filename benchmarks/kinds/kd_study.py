"""Issue 4's study: one searched genotype retrained with 3 seeds under each distillation setting, with
dev accuracy (mean, std), a paired-bootstrap interval against no KD, and the CKA diagonal mean (Jung
et al.'s Table 6 analysis) of every student. Resumable; ``lane: K/N`` runs every N-th run so that two
one-thread processes share the machine; ``report: true`` (after all lanes) writes the table.

The study: `python benchmarks/run.py kd_study_10000x4 --set lane=0/2 & python benchmarks/run.py kd_study_10000x4
--set lane=1/2; wait; python benchmarks/run.py kd_study_10000x4 --set report=true` (benchmarks/studies/).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from common import DATA_DIR, publish, retrain_once, study_command

SETTINGS = {"no KD": "hard_ce", "logit_mse": "logit_mse", "soft_ce": "soft_ce=0.5,hard_ce=0.5",
            "soft_ce+pkd": "soft_ce=0.5,hard_ce=0.5,pkd=1", "soft_ce+fsd": "soft_ce=0.5,hard_ce=0.5,fsd=1"}
PARAMS = {
    "genotype": ("runs/sst2-search-seed0/genotype.json", "the searched genotype every run retrains"),
    "teacher": ("runs/sst2-teacher", "the teacher run"),
    "runs": ("runs/sst2-kd-study", "where the runs go"),
    "max_train_examples": (10000, "training rows (a fixed seeded subsample)"),
    "epochs": (4, "epochs of every run"),
    "seeds": (3, "seeds 0..N-1 of every setting"),
    "lane": ("0/1", "K/N: train every N-th run only (no table)"),
    "report": (False, "train nothing: the table (after all lanes)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def runs(args):
    return [(name, seed) for name in SETTINGS for seed in range(args.seeds)]


def out_dir(args, name, seed) -> Path:
    return Path(args.runs) / f"{name.replace(' ', '_').replace('+', '-')}-seed{seed}"


def lanes_command() -> str:
    """The sequence that made the table: the study in two lanes, then its report (this command)."""
    report = study_command()
    train = re.sub(r" --set '?report=[^ ']*'?", "", report)
    return f"{train} --set lane=0/2 & {train} --set lane=1/2; {report}"


def run(args) -> None:
    if not args.report:
        from naskd.analysis import run_analyze_cka

        k, n = (int(x) for x in args.lane.split("/"))
        for i, (name, seed) in enumerate(runs(args)):
            if i % n != k:
                continue
            out = out_dir(args, name, seed)
            retrain_once(out, {"task": "sst2", "genotype": args.genotype, "teacher": args.teacher,
                               "data_dir": args.data_dir, "kd": SETTINGS[name], "seed": seed, "epochs": args.epochs,
                               "max_train_examples": args.max_train_examples})
            if not (out / "cka" / "cka.json").is_file():
                run_analyze_cka(str(out / "student"), args.teacher, out=str(out / "cka"), overwrite=True,
                                task="sst2", data_dir=args.data_dir, batch_size=32, max_examples=None,
                                layerwise=False, cache_dir=None)
        return
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.stats import mean_std, paired_bootstrap

    gold = np.asarray(read_columns(get_task("sst2"), args.data_dir, "dev")["label"])
    correct, accs, ckas = {}, {}, {}
    done = [name for name in SETTINGS
            if all((out_dir(args, name, seed) / "cka" / "cka.json").is_file() for seed in range(args.seeds))]
    missing = [name for name in SETTINGS if name not in done]
    if "no KD" not in done:
        sys.exit("the no-KD runs are not finished yet")
    for name in done:
        per_seed = []
        for seed in range(args.seeds):
            out = out_dir(args, name, seed)
            per_seed.append((np.load(out / "dev_logits.npy").argmax(-1) == gold).astype(float))
            accs.setdefault(name, []).append(json.loads((out / "metrics.json").read_text())["dev"]["accuracy"])
            cka = json.loads((out / "cka" / "cka.json").read_text())
            ckas.setdefault(name, []).append((cka.get("minibatch_cka", float("nan")), cka["diagonal_mean"]))
        correct[name] = np.mean(per_seed, axis=0)          # per dev sentence: share of seeds right
    rows = []
    for name in done:
        m, s = mean_std(accs[name])
        row = {"setting": name, "--kd": SETTINGS[name], "dev accuracy mean": m, "std": s,
               "seeds": ", ".join(f"{a:.4f}" for a in accs[name]),
               "CKA (mini-batch estimator)": float(np.mean([c[0] for c in ckas[name]])),
               "CKA diagonal mean (biased)": float(np.mean([c[1] for c in ckas[name]]))}
        if name != "no KD":
            b = paired_bootstrap(correct[name], correct["no KD"])
            row["this - no KD (95% CI)"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
            row["verdict"] = ("better than no KD" if b["low"] > 0 else "worse than no KD" if b["high"] < 0
                              else "not distinguishable")
        rows.append(row)
    g = json.loads(Path(args.genotype).read_text())
    publish(f"kd_study_{args.max_train_examples}x{args.epochs}", "Distillation criteria on SST-2: one searched "
            "genotype, 3 seeds each", rows, ["setting", "--kd", "dev accuracy mean", "std", "seeds",
                                            "this - no KD (95% CI)", "verdict", "CKA (mini-batch estimator)",
                                            "CKA diagonal mean (biased)"],
            lanes_command(),
            notes=f"`naskd retrain` of {args.genotype} (cells: {g['cells']}, aggregator {g['aggregator']}, width "
                  f"{g['width']}) on a fixed seeded {args.max_train_examples:,}-example SST-2 training subsample for "
                  f"{args.epochs} epochs (best epoch on dev), seeds 0..{args.seeds - 1}, teacher {args.teacher}. "
                  "Intervals: paired bootstrap over the 872 dev sentences of the per-sentence share of seeds "
                  "that are right (10,000 resamples). CKA: `naskd analyze cka`, dev batches of 32, penultimate "
                  "features: Nguyen et al.'s mini-batch estimator (unbiased HSIC summed over the batches, then "
                  "normalised; approaches the full-data CKA), and Jung et al.'s per-batch diagonal mean, biased "
                  "upwards at small batches, for comparison with their Table 6."
                  + (f" Not finished yet (left out): {', '.join(missing)}." if missing else ""))
