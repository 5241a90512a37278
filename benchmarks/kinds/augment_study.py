"""Issue 7's study: `bilstm_soft` and the searched SST-2 student retrained with and without the
teacher-labelled synthetic data of `naskd augment`, 3 seeds each, on a fixed seeded training subsample with
its own augmentations (the default settings), dev accuracy mean +- std and a paired-bootstrap interval of
with - without. ``full`` instead runs the whole training split's augmentation (about 840k synthetic
sentences labelled by the teacher; resumable part by part) and records its size and times.

Both students use logit MSE alone (Tang et al.'s alpha = 0), so synthetic and original examples train on the
same term. Without augmentation a student gets more epochs (the subsample is small; the best dev epoch
is kept), so the augmented runs do not win by training longer alone.

Study augment_study_2000 (benchmarks/results/augment_study_2000.{md,json}), one thread per process:
  python benchmarks/run.py augment_study_2000 --set lane=0/2 &
  python benchmarks/run.py augment_study_2000 --set lane=1/2; wait
  python benchmarks/run.py augment_study_2000 --set report=true
  python benchmarks/run.py augment_study_2000 --set full=true      # the full-split labelling job, resumable
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import DATA_DIR, load_json, publish, retrain_once, study_command

STUDENTS = {"bilstm_soft": {"student": "bilstm_soft"}, "searched": {"student": "genotype"}}
PARAMS = {
    "teacher": ("runs/sst2-teacher", "the SST-2 teacher run: labels the synthetic data, distilled from"),
    "genotype": ("runs/sst2-search-seed0/genotype.json", "the searched student's genotype"),
    "runs": ("runs/sst2-augment-study", "where the retrains go (resumed when there)"),
    "augmented": ("runs/sst2-augment-bench",
                  "the subsample's augment run (the study augment_rates, kind bench_augment, makes the same one)"),
    "full_out": ("runs/sst2-augment", "the whole training split's augment run (full)"),
    "max_train_examples": (2000, "the seeded training subsample"),
    "epochs": (20, "epochs without augmentation"),
    "epochs_augmented": (4, "epochs with augmentation"),
    "seeds": (3, "retrain seeds 0..seeds-1"),
    "lane": ("0/1", "K/N: run every N-th retrain, starting at the K-th (lane 0 also augments the subsample)"),
    "taggers": ("", "comma-separated POS taggers of `naskd augment --pos-tagger` (lexicon,context): one augmented set "
                    "(AUGMENTED-TAGGER) and one row per tagger, compared pairwise; empty: augment's default, one set"),
    "table": ("", "the table's name (default augment_study_MAX_TRAIN_EXAMPLES, with _TAGGER-... when taggers "
                  "are named)"),
    "full": (False, "instead: the whole training split's augmentation, resumable"),
    "report": (False, "instead: the table from the finished runs (after all lanes)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def taggers(args) -> list[str | None]:
    """The POS taggers compared (None: augment's default, the study as first recorded)."""
    return [t.strip() for t in args.taggers.split(",") if t.strip()] or [None]


def augmented_dir(args, tagger) -> Path:
    return Path(args.augmented + (f"-{tagger}" if tagger else ""))


def augment(args, out: Path, max_train_examples, tagger=None) -> dict:
    from naskd.augment.run import resolve_augment_config, run_augment

    m = load_json(out / "metrics.json")
    if m is not None and m.get("status") == "finished":
        return m
    cfg = resolve_augment_config({"task": "sst2", "teacher": args.teacher, "data_dir": args.data_dir,
                                  "out": str(out), "max_train_examples": max_train_examples, "kd": "logit_mse",
                                  **({"pos_tagger": tagger} if tagger else {})})
    return run_augment(cfg, resume=out.is_dir() and any(out.iterdir()))


def out_dir(args, student, augmented, seed) -> Path:
    """``augmented``: False, or the tagger of the augmented set (True/None: augment's default)."""
    kind = "noaug" if augmented is False else "aug" if augmented in (True, None) else f"aug-{augmented}"
    return Path(args.runs) / f"{student}-{kind}-seed{seed}"


def all_runs(args):
    return [(s, a, seed) for s in STUDENTS for a in (False, *taggers(args)) for seed in range(args.seeds)]


def run_lane(args) -> None:
    k, n = (int(x) for x in args.lane.split("/"))
    if k == 0:
        for tagger in taggers(args):
            augment(args, augmented_dir(args, tagger), args.max_train_examples, tagger)
    for i, (student, augmented, seed) in enumerate(all_runs(args)):
        if i % n != k:
            continue
        if augmented is not False:
            aug_dir = augmented_dir(args, augmented)
            while (load_json(aug_dir / "metrics.json") or {}).get("status") != "finished":
                time.sleep(30)                 # lane 0 is still labelling
        flags = {"task": "sst2", "teacher": args.teacher, "data_dir": args.data_dir, "kd": "logit_mse",
                 "seed": seed, "max_train_examples": args.max_train_examples,
                 "epochs": args.epochs if augmented is False else args.epochs_augmented, **STUDENTS[student]}
        if student == "searched":
            flags["genotype"] = args.genotype
        if augmented is not False:            # None: augment's default tagger
            flags["augmented"] = str(aug_dir)
        retrain_once(out_dir(args, student, augmented, seed), flags)


def rates(aug: dict) -> str:
    """The realised mask / POS-replacement / n-gram rates of an augment run (requested ones in its settings)."""
    if "effective_mask_rate" not in aug:
        return ""
    return (f"{aug['effective_mask_rate']:.3f} / {aug['effective_pos_replacement_rate']:.3f} / "
            f"{aug['ngram_rate']:.3f}")


def verdict(b: dict, better: str, worse: str) -> str:
    return better if b["low"] > 0 else worse if b["high"] < 0 else "not distinguishable"


def report(args) -> None:
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.stats import mean_std, paired_bootstrap

    gold = np.asarray(read_columns(get_task("sst2"), args.data_dir, "dev")["label"])
    kinds = taggers(args)
    augs = {t: load_json(augmented_dir(args, t) / "metrics.json") or {} for t in kinds}
    rows, missing = [], []
    for student in STUDENTS:
        correct = {}
        for augmented in (False, *kinds):
            outs = [out_dir(args, student, augmented, s) for s in range(args.seeds)]
            ms = [load_json(o / "metrics.json") for o in outs]
            label = "without" if augmented is False else f"with ({augmented})" if augmented else "with"
            if not all(m is not None and m.get("status") == "finished" for m in ms):
                missing.append(f"{student} {label}")
                continue
            accs = [m["dev"]["accuracy"] for m in ms]
            correct[augmented] = np.mean([(np.load(o / "dev_logits.npy").argmax(-1) == gold) for o in outs], axis=0)
            m_, s_ = mean_std(accs)
            aug = augs.get(augmented, {}) if augmented is not False else {}
            row = {"student": student, "training data": f"{args.max_train_examples:,} rows"
                   + (f" + {aug.get('kept', 0):,} synthetic" if augmented is not False else ""),
                   "POS tagger": (augmented or aug.get("pos_tagger") or "") if augmented is not False else "",
                   "realised mask / POS / n-gram": rates(aug),
                   "epochs": ms[0]["epochs_done"], "dev accuracy mean": m_, "std": s_,
                   "seeds": ", ".join(f"{a:.4f}" for a in accs),
                   "train minutes (one run)": float(np.mean([m["train_seconds"] for m in ms])) / 60}
            if augmented is not False and False in correct:
                b = paired_bootstrap(correct[augmented], correct[False])
                row["with - without (95% CI)"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
                row["verdict"] = verdict(b, "augmentation helps", "augmentation hurts")
            if augmented not in (False, kinds[0]) and kinds[0] in correct:
                b = paired_bootstrap(correct[augmented], correct[kinds[0]])
                row[f"- {kinds[0]} (95% CI)"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
                row[f"against {kinds[0]}"] = verdict(b, "better", "worse")
            rows.append(row)
    full = load_json(Path(args.full_out) / "metrics.json")
    full_note = ""
    if full is not None:
        f = full
        full_command = study_command().replace(" --set report=true", "") + " --set full=true"
        full_note = (f" Whole training split (`{full_command}`, status {f['status']}): "
                     f"{f['original_examples']:,} sentences gave {f['kept']:,} synthetic ones "
                     f"({f['duplicates_dropped']:,} duplicates dropped); generation {f['generation_seconds']:.0f} s "
                     f"({f['generation_rate_per_s']:,.0f} draws/s), teacher labelling "
                     f"{f.get('label_seconds', 0) / 60:.1f} min at {f.get('label_rate_per_s', 0):.0f} "
                     f"sentences/s in {f.get('parts', '?')} parts.")
    aug = augs[kinds[0]]
    columns = ["student", "training data"] + (["POS tagger", "realised mask / POS / n-gram"] if kinds[0] else []) + [
        "epochs", "dev accuracy mean", "std", "seeds", "with - without (95% CI)", "verdict"]
    if len(kinds) > 1:
        columns += [f"- {kinds[0]} (95% CI)", f"against {kinds[0]}"]
    default_table = f"augment_study_{args.max_train_examples}" + ("_" + "-".join(kinds) if kinds[0] else "")
    publish(args.table or default_table, "Augmentation for distillation on SST-2: "
            "students with and without teacher-labelled synthetic data"
            + (f", POS taggers {' and '.join(kinds)}" if len(kinds) > 1 else ""), rows,
            columns + ["train minutes (one run)"],
            notes=f"A fixed seeded {args.max_train_examples:,}-row SST-2 training subsample (data seed 0) and its "
                  f"augmentations (`naskd augment` defaults: n_iter {aug.get('n_iter')}, p_mask {aug.get('p_mask')}, "
                  f"p_pos {aug.get('p_pos')}, p_ng {aug.get('p_ng')}"
                  + (f"; `--pos-tagger` {', '.join(kinds)}" if kinds[0] else "") + f"), labelled by {args.teacher}. "
                  "bilstm_soft: Tang et al.'s recipe (BiLSTM 150x2, ReLU 200, AdaDelta lr 1.0, batch 50); searched: "
                  f"{args.genotype} (AdamW 1e-3, batch 32). Both with `--kd logit_mse`; best dev epoch of each run; "
                  f"seeds 0..{args.seeds - 1}; one thread per run. Realised rates: the share of words masked, "
                  "replaced by a word of the same POS tag, and of perturbed sentences given an n-gram sample. "
                  "Intervals: paired bootstrap over the 872 dev "
                  "sentences of the share of seeds that are right (10,000 resamples)." + full_note
                  + (f" Not finished yet (left out): {', '.join(missing)}." if missing else ""))


def run(args) -> None:
    if args.full:
        augment(args, Path(args.full_out), None)
    elif args.report:
        report(args)
    else:
        run_lane(args)
