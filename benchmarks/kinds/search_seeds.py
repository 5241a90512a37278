"""`naskd search --task sst2 --layers 6` with three seeds (and one second-order run), resumable: finished
runs are read, stopped ones resumed. Tabulates the genotypes, their pairwise edge overlap and wall times.
The study: `python benchmarks/run.py search_seeds` (benchmarks/studies/); one run writes both
benchmarks/results/search_seeds.{md,json} and benchmarks/results/search_overlap.{md,json}.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from common import DATA_DIR, publish

from naskd.genotype import Genotype, edge_overlap
from naskd.search.run import resolve_search_config, run_search

PARAMS = {
    "seeds": ([0, 1, 2], "search seeds (RUNS/TASK-search-seedS)"),
    "runs": ("runs", "where the searches go (resumed when there)"),
    "task": ("sst2", "the task searched on"),
    "order2": (False, "also run one second-order search"),
    "order2_flags": ({"max_train_examples": 2000, "epochs": 3},
                     "settings for the second-order run, a mapping of `naskd search` settings (it costs about "
                     "2.5x per step)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def search_once(out: Path, flags: dict) -> dict:
    mpath = out / "metrics.json"
    m = json.loads(mpath.read_text()) if mpath.is_file() else None
    if m is not None and m.get("status") == "finished":
        return m
    cfg = resolve_search_config({**flags, "out": str(out)})
    return run_search(cfg, resume=(out / "checkpoint.pt").is_file())


def run(args) -> None:
    base = {"task": args.task, "layers": 6, "data_dir": args.data_dir}
    runs = {}
    for s in args.seeds:
        runs[f"seed {s}"] = search_once(Path(args.runs) / f"{args.task}-search-seed{s}", {**base, "seed": int(s)})
    if args.order2:
        extra = dict(args.order2_flags or {})
        runs["order 2, seed 0"] = search_once(Path(args.runs) / f"{args.task}-search-order2",
                                              {**base, "seed": 0, "order": 2, **extra})
    rows = []
    for name, m in runs.items():
        rows.append({"run": name, "order": m["order"], "train examples": m["train_examples"],
                     "epochs": m["epochs_done"], "supernet dev acc": m["dev"].get("accuracy"),
                     "parameter-free share": m["parameter_free_share"],
                     "search minutes": m["search_seconds"] / 60, "genotype": m["genotype_text"]})
    genos = {k: Genotype.from_dict(m["genotype"]) for k, m in runs.items()}
    overlap = [{"pair": f"{a} / {b}", "edge overlap (Jaccard)": edge_overlap(genos[a], genos[b]),
                "same aggregator": genos[a].aggregator == genos[b].aggregator}
               for a, b in itertools.combinations([k for k in genos if k.startswith("seed")], 2)]
    publish("search_seeds", f"NAS-KD search on {args.task}: genotypes found with each seed", rows,
            ["run", "order", "train examples", "epochs", "supernet dev acc", "parameter-free share",
             "search minutes", "genotype"],
            notes="Default settings of `naskd search --task sst2 --layers 6` (a seeded training subsample of "
                  f"{runs[f'seed {args.seeds[0]}']['subsample']:,} examples split into weight and "
                  "architecture halves, width 64); 'search minutes' is the "
                  "search loop alone, without the one-off teacher-output pass. Edge overlap = Jaccard index "
                  "of (node, input, op) edges.")
    publish("search_overlap", f"Edge overlap between seeds ({args.task})", overlap,
            ["pair", "edge overlap (Jaccard)", "same aggregator"])
