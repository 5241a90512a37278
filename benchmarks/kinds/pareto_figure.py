"""The front on SST-2 dev (issue 21, protocol 4): dev accuracy against CPU speed relative to the teacher for
the searched picks, the random picks, every baseline and the teacher, all timed in one `naskd bench` run.

Reads the finished retrains of the matched_speed study (``matched_root``) and the strategy_budget study
(``budget_root``); every student directory found is benched with the teacher in one run (``threads``,
batch-128 PyTorch throughput, the models taking turns), so the speeds are comparable. Several training seeds
of one student (the matched study's ``-sN``) are drawn as their mean accuracy, at the speed of the first seed's
student (they are the same architecture); the equal-budget study's ``-sN`` are search seeds, each its own pick
and point.

The study: `python benchmarks/run.py pareto_sst2` (benchmarks/studies/; one thread).

Run it alone on a quiet machine (timings). Writes benchmarks/results/pareto_sst2.{png,md,json}.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from common import DATA_DIR, REQUIRED, RESULTS, Evidence, load_json, markdown_table, study_command

GROUPS = {"baseline": ("#00798c", "s"), "spos": ("#d1495b", "o"), "hyperband": ("#edae49", "D"),
          "gdas": ("#66a182", "v"), "random": ("#9aa5b1", "^"), "teacher": ("#000000", "*")}
SEED = re.compile(r"-s(\d+)(-retrain)?$")
PARAMS = {
    "teacher": (REQUIRED, "the SST-2 teacher run (benched with the students; its dev predictions)"),
    "matched_root": (None, "the matched_speed study's root (its finished retrains)"),
    "budget_root": (None, "the strategy_budget study's root (its finished retrains)"),
    "out": (REQUIRED, "the bench run's directory (replaced when it exists)"),
    "threads": (1, "threads of the bench"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def group_of(name: str) -> tuple[str, str]:
    """(group, label) of a run directory name of the two studies."""
    if name.startswith("budget-"):     # budget-WHO-sN-retrain: N is the search seed, each seed its own pick
        who, seed = name.split("-")[1:3]
        return who, f"{who} pick, search seed {seed.removeprefix('s')} (equal budget)"
    base = SEED.sub("", name)
    if base.startswith(("matched-spos-", "matched-random-", "matched-hyperband-")):
        who, b = base.split("-", 2)[1:]
        return who, f"{who} pick at {b}'s speed"
    return "baseline", base.removeprefix("matched-")


def run(args) -> None:
    from naskd.bench import run_bench
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task

    roots = [Path(r).expanduser() for r in (args.matched_root, args.budget_root) if r]
    runs = sorted(d for r in roots if r.is_dir() for d in r.iterdir()
                  if (d / "student").is_dir() and (load_json(d / "metrics.json") or {}).get("status") == "finished")
    if not runs:
        raise SystemExit("no finished student under " + ", ".join(map(str, roots)))
    gold = np.asarray(read_columns(get_task("sst2"), args.data_dir, "dev")["label"])
    ev = Evidence()
    students: dict = {}                # label -> {"group", "runs": [...], "accs": [...]}
    for d in runs:
        group, label = group_of(d.name)
        s = students.setdefault(label, {"group": group, "runs": [], "accs": []})
        s["runs"].append(d)
        s["accs"].append(float((ev.labels(d, len(gold)) == gold).mean()))
    teacher = Path(args.teacher).expanduser()
    models = [str(s["runs"][0] / "student") for s in students.values()] + [str(teacher)]
    res = run_bench(models, data_dir=args.data_dir, out=str(Path(args.out).expanduser()), onnx=False,
                    threads=args.threads, overwrite=Path(args.out).expanduser().exists())
    by_path = {str(Path(r["path"]).resolve()): r for r in res["rows"]}

    def row_of(path) -> dict:
        p = Path(path).resolve()
        return by_path.get(str(p)) or by_path[str(p.parent)]

    t_row = row_of(teacher)
    t_acc = float((ev.labels(teacher, len(gold), finished=False) == gold).mean())
    rows = [{"student": "teacher", "group": "teacher", "seeds": 1, "dev accuracy": t_acc, "speed (x teacher)": 1.0,
             "params without embeddings": t_row["params without embeddings"]}]
    for label, s in students.items():
        r = row_of(s["runs"][0] / "student")
        rows.append({"student": label, "group": s["group"], "seeds": len(s["accs"]),
                     "dev accuracy": float(np.mean(s["accs"])), "speed (x teacher)": r["torch x throughput"],
                     "params without embeddings": r["params without embeddings"]})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naskd.utils.io import atomic_path, write_json, write_text

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for g in [*GROUPS, *sorted({r["group"] for r in rows} - set(GROUPS))]:    # a new group is drawn too
        color, marker = GROUPS.get(g, ("#555555", "x"))
        pts = [r for r in rows if r["group"] == g]
        if pts:
            ax.scatter([r["speed (x teacher)"] for r in pts], [r["dev accuracy"] for r in pts], c=color,
                       marker=marker, s=60 if g == "teacher" else 36, label=g, zorder=3)
            for r in pts:
                ax.annotate(r["student"], (r["speed (x teacher)"], r["dev accuracy"]), textcoords="offset points",
                            xytext=(4, 3), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel(f"batch-128 CPU throughput relative to the teacher ({args.threads} thread(s), measured)")
    ax.set_ylabel("SST-2 dev accuracy (seed mean, last epoch)")
    ax.set_title("SST-2: students against the teacher, one `naskd bench` run", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_path(RESULTS / "pareto_sst2.png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    command = study_command()
    text = "\n".join(["## SST-2 front: dev accuracy against measured CPU speed", "", f"Made with `{command}`.", "",
                      res["note"], "", "![front](pareto_sst2.png)", "",
                      markdown_table(rows, ["student", "group", "seeds", "dev accuracy", "speed (x teacher)",
                                            "params without embeddings"]), ""])
    write_text(RESULTS / "pareto_sst2.md", text)
    write_json(RESULTS / "pareto_sst2.json", {"command": command, "rows": rows, "bench": res["rows"]})
    print(text)

