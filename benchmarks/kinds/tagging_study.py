"""Issue 6's study: CRF students on CoNLL-2000 (dev carved from train) and CoNLL-2003 (valid), distilled with
no KD, kbest, struct_kd and substructure, 3 seeds each, span F1 mean +- std and paired-bootstrap intervals.

The student is the 3-cell genotype `naskd search --task conll2000 --layers 3 --kd substructure` finds
(searched once, seed 0, and reused for CoNLL-2003 as a transferred cell), retrained from scratch on the full
training split with each criterion. Every step is resumable; ``lane=K/N`` runs every N-th retrain so that
one-thread processes share the machine; ``report`` (after all lanes) writes the tables.

Study tagging_study (benchmarks/results/tagging_study_conll2000.{md,json}, tagging_study_conll2003.{md,json}):
  naskd teacher --task conll2000; naskd teacher --task conll2003       # the teachers, first
  python benchmarks/run.py tagging_study --set lane=0/2 & python benchmarks/run.py tagging_study --set lane=1/2; wait
  python benchmarks/run.py tagging_study --set report=true
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from common import DATA_DIR, load_json, publish, retrain_once

METHODS = {"no KD (CRF likelihood)": "hard_ce", "kbest": "kbest", "struct_kd": "struct_kd",
           "substructure": "substructure"}
TASK_METHODS = {"conll2000": list(METHODS), "conll2003": ["no KD (CRF likelihood)", "substructure"]}
PARAMS = {
    "runs": ("runs", "where the teachers are and the search and retrains go (resumed when there)"),
    "tasks": (["conll2000", "conll2003"], "the tasks"),
    "epochs": (10, "retrain epochs of the searched student"),
    "seeds": (3, "retrain seeds 0..seeds-1"),
    "truncated": (True, "with the truncated-teacher students (false: leave them out)"),
    "lane": ("0/1", "K/N: run every N-th retrain, starting at the K-th (lane 0 also searches)"),
    "report": (False, "instead: the tables from the finished runs (after all lanes)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def slug(name: str) -> str:
    return name.split(" (")[0].replace(" ", "_")


# the paper's own student, the teacher's first 3 layers, as a second student on CoNLL-2000 (after the others)
TRUNCATED = {"task": "conll2000", "methods": ["no KD (CRF likelihood)", "substructure"], "epochs": 3}


def out_dir(args, task, name, seed, student="searched") -> Path:
    prefix = "" if student == "searched" else "truncated3-"
    return Path(args.runs) / f"{task}-study" / f"{prefix}{slug(name)}-seed{seed}"


def all_runs(args):
    runs = [(task, "searched", name, seed) for task in args.tasks for name in TASK_METHODS[task]
            for seed in range(args.seeds)]
    if args.truncated and TRUNCATED["task"] in args.tasks:
        runs += [(TRUNCATED["task"], "truncated", name, seed) for name in TRUNCATED["methods"]
                 for seed in range(args.seeds)]
    return runs


def search(args) -> Path:
    """The 3-cell CRF supernet searched once with sub-structure KD (resumable)."""
    from naskd.search.run import resolve_search_config, run_search

    out = Path(args.runs) / "conll2000-search"
    m = load_json(out / "metrics.json")
    if m is None or m.get("status") != "finished":
        cfg = resolve_search_config({"task": "conll2000", "layers": 3, "kd": "substructure", "seed": 0,
                                     "teacher": teacher(args, "conll2000"), "data_dir": args.data_dir,
                                     "out": str(out)})
        run_search(cfg, resume=(out / "checkpoint.pt").is_file())
    return out / "genotype.json"


def teacher(args, task) -> str:
    t = Path(args.runs) / f"{task}-teacher"
    m = load_json(t / "metrics.json")
    if m is None or m.get("status") != "finished":
        sys.exit(f"{t} is not a finished teacher run: run `naskd teacher --task {task}` first")
    return str(t)


def run_lane(args) -> None:
    k, n = (int(x) for x in args.lane.split("/"))
    genotype = Path(args.runs) / "conll2000-search" / "genotype.json"
    if k == 0:
        genotype = search(args)
    for i, (task, student, name, seed) in enumerate(all_runs(args)):
        if i % n != k:
            continue
        flags = {"task": task, "teacher": teacher(args, task), "data_dir": args.data_dir, "kd": METHODS[name],
                 "seed": seed, "epochs": args.epochs}
        if student == "truncated":
            flags.update(student="truncated_teacher", truncate_k=3, epochs=TRUNCATED["epochs"])
        else:
            while not (load_json(genotype.parent / "metrics.json") or {}).get("status") == "finished":
                time.sleep(30)                 # lane 0 is still searching
            flags["genotype"] = str(genotype)
        retrain_once(out_dir(args, task, name, seed, student), flags)


def report(args) -> None:
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.genotype import Genotype
    from naskd.stats import f1_from_counts, mean_std, paired_bootstrap_f1, span_counts
    from naskd.teachers.model import load_teacher
    from naskd.network import count_parameters

    for task in args.tasks:
        spec = get_task(task)
        gold = [[spec.labels[t] for t in s] for s in read_columns(spec, args.data_dir, "dev")["tags"]]
        t_metrics = load_json(Path(args.runs) / f"{task}-teacher" / "metrics.json")
        t_model, _, _ = load_teacher(Path(args.runs) / f"{task}-teacher")
        n, n_emb = count_parameters(t_model)
        rows = [{"model": "teacher (all-MiniLM-L6-v2 + CRF)", "F1 mean": t_metrics["dev"]["f1"], "std": "",
                 "seeds": "1 run", "parameters without embeddings": n - n_emb,
                 "train minutes (one run)": t_metrics["train_seconds"] / 60}]
        counts, missing = {}, []
        students = [("searched", name) for name in TASK_METHODS[task]]
        if args.truncated and task == TRUNCATED["task"]:
            students += [("truncated", name) for name in TRUNCATED["methods"]]
        for student, name in students:
            label = name if student == "searched" else f"{name} / truncated 3"
            outs = [out_dir(args, task, name, s, student) for s in range(args.seeds)]
            ms = [load_json(o / "metrics.json") for o in outs]
            if not all(m is not None and m.get("status") == "finished" for m in ms):
                missing.append(label)
                continue
            per_seed = []
            for o in outs:
                pred = json.loads((o / "dev_predictions.json").read_text())
                g = [s[:len(p)] for s, p in zip(gold, pred)]     # words past the length limit: not predicted
                per_seed.append(span_counts(g, pred))
            counts[label] = np.sum(per_seed, axis=0)                # per sentence, summed over seeds
            f1s = [m["dev"]["f1"] for m in ms]
            for o, c, f in zip(outs, per_seed, f1s):              # the counts reproduce each run's own F1
                if abs(f1_from_counts(c.sum(0)) - f) > 1e-6:
                    sys.exit(f"{o}: dev_predictions.json gives F1 {f1_from_counts(c.sum(0)):.6f}, metrics.json {f:.6f}")
            m_, s_ = mean_std(f1s)
            who = "3-cell searched student" if student == "searched" else "teacher's first 3 layers"
            rows.append({"model": f"{who}, {name}", "--kd": METHODS[name], "label": label, "F1 mean": m_, "std": s_,
                         "seeds": ", ".join(f"{f:.4f}" for f in f1s),
                         "parameters without embeddings": ms[0]["parameters_without_embeddings"],
                         "train minutes (one run)": float(np.mean([m["train_seconds"] for m in ms])) / 60})
        for row in rows[1:]:
            label = row.pop("label")
            base = "no KD (CRF likelihood)" + ("" if "truncated" not in label else " / truncated 3")
            if label != base and base in counts:
                b = paired_bootstrap_f1(counts[label], counts[base])
                row["this - no KD (95% CI)"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
                row["verdict"] = ("better" if b["low"] > 0 else "worse" if b["high"] < 0 else "not distinguishable")
        pairs = [("substructure", "struct_kd"), ("struct_kd", "kbest"), ("substructure", "kbest")]
        extra = []
        for a, b_ in pairs:
            if a in counts and b_ in counts:
                b = paired_bootstrap_f1(counts[a], counts[b_])
                extra.append(f"{a} - {b_}: {b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}] "
                             f"({'distinguishable' if b['distinguishable'] else 'not distinguishable'})")
        g_path = Path(args.runs) / "conll2000-search" / "genotype.json"
        g = Genotype.from_dict(load_json(g_path)) if g_path.is_file() else None
        split = "CoNLL-2000, dev carved from train (10%, seed 13)" if task == "conll2000" else "CoNLL-2003 valid"
        publish(f"tagging_study_{task}", f"CRF students on {split}: span F1, {args.seeds} seeds each", rows,
                ["model", "--kd", "F1 mean", "std", "seeds", "this - no KD (95% CI)", "verdict",
                 "parameters without embeddings", "train minutes (one run)"],
                notes=f"Student: the genotype of `naskd search --task conll2000 --layers 3 --kd substructure` (seed 0"
                      f"{', transferred to CoNLL-2003' if task == 'conll2003' else ''}): "
                      f"{g.describe() if g else '?'}, width {g.width if g else '?'}; `naskd retrain` on the full "
                      f"training split, {args.epochs} epochs, best epoch on dev, seeds 0..{args.seeds - 1}, "
                      "one thread per run"
                      + (f"; the teacher's first 3 layers (`--student truncated_teacher --truncate-k 3`, lr 5e-5): "
                         f"{TRUNCATED['epochs']} epochs" if args.truncated and task == TRUNCATED["task"] else "")
                      + ". Lambda schedules: substructure "
                      "lambda = 1 with the CRF likelihood alone in the last epoch; kbest and struct_kd lambda "
                      "falling linearly from 1 to 0. Intervals: paired bootstrap over dev sentences (10,000 "
                      "resamples) of the span F1 pooled over the seeds, recomputed from per-sentence span counts. "
                      + (" Between criteria: " + "; ".join(extra) + "." if extra else "")
                      + (f" Not finished yet (left out): {', '.join(missing)}." if missing else ""))


def run(args) -> None:
    unknown = sorted(set(args.tasks) - set(TASK_METHODS))
    if unknown:
        raise SystemExit(f"tasks={args.tasks!r}: each one of {', '.join(TASK_METHODS)}")
    report(args) if args.report else run_lane(args)
