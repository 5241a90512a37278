"""`naskd search --task sst2 --layers 6` with three seeds (and one second-order run), resumable: finished
runs are read, stopped ones resumed. Tabulates the genotypes, their pairwise edge overlap and wall times.
Usage: python benchmarks/search_seeds.py [--seeds 0,1,2] [--order2] [--runs runs]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

from naskd.genotype import Genotype, edge_overlap  # noqa: E402
from naskd.search.run import resolve_search_config, run_search  # noqa: E402


def run(out: Path, flags: dict) -> dict:
    mpath = out / "metrics.json"
    m = json.loads(mpath.read_text()) if mpath.is_file() else None
    if m is not None and m.get("status") == "finished":
        return m
    cfg = resolve_search_config({**flags, "out": str(out)})
    return run_search(cfg, resume=(out / "checkpoint.pt").is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--order2", action="store_true", help="also run one second-order search")
    ap.add_argument("--order2-flags", default="max_train_examples=2000,epochs=3",
                    help="settings for the second-order run (it costs about 2.5x per step)")
    ap.add_argument("--data-dir", default=os.environ.get("NASKD_DATA_DIR", "../shared/data"))
    args = ap.parse_args()
    base = {"task": args.task, "layers": 6, "data_dir": args.data_dir}
    runs = {}
    for s in args.seeds.split(","):
        runs[f"seed {s}"] = run(Path(args.runs) / f"{args.task}-search-seed{s}", {**base, "seed": int(s)})
    if args.order2:
        extra = dict(kv.split("=") for kv in args.order2_flags.split(",") if kv)
        runs["order 2, seed 0"] = run(Path(args.runs) / f"{args.task}-search-order2",
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
            "python benchmarks/search_seeds.py --order2",
            notes="Default settings of `naskd search --task sst2 --layers 6` (a seeded training subsample of "
                  f"{runs['seed ' + args.seeds.split(',')[0]]['subsample']:,} examples split into weight and "
                  "architecture halves, width 64); 'search minutes' is the "
                  "search loop alone, without the one-off teacher-output pass. Edge overlap = Jaccard index "
                  "of (node, input, op) edges.")
    publish("search_overlap", f"Edge overlap between seeds ({args.task})", overlap,
            ["pair", "edge overlap (Jaccard)", "same aggregator"], "python benchmarks/search_seeds.py")


if __name__ == "__main__":
    main()
