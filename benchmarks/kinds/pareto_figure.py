"""The front on SST-2 dev (issue 21, protocol 4): dev accuracy against CPU speed relative to the teacher for
the searched picks, the random picks, every baseline and the teacher; their architectures (untrained stand-ins,
below) all timed in one `naskd bench` run.

Accuracy: the committed dev predictions (results/dev_predictions_sst2.json) of every finished retrain of the
matched_speed study (``matched-*``) and the strategy_budget study (``budget-*``), and of the teacher they were
distilled against (its predictions recorded with them; one teacher for all, checked). Several training seeds
of one student (the matched study's ``-sN``) are drawn as their mean accuracy; the equal-budget study's ``-sN``
are search seeds, each its own pick and point.

Speed: the run directories are not needed. A model's CPU time depends on its architecture, not on its
weights (no op of these students branches on values), so each distinct architecture is built again as a
stand-in under ``out``: a teacher of the same base encoder fine-tuned on ``stand_in_rows`` rows, and each
student retrained from it on as many rows (a genotype read back from the run's recorded description; a
baseline from its kind and sizes). The stand-ins and the stand-in teacher are timed in one `naskd bench` run
(``threads``, batch-128 PyTorch throughput, the models taking turns), so the speeds are comparable; their own
(untrained) accuracy is not used.

The study: `python benchmarks/run.py pareto_sst2` (benchmarks/studies/; one thread). Run it alone on a quiet
machine (timings). Writes benchmarks/results/pareto_sst2.{png,md,json}.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from common import (DATA_DIR, REQUIRED, RESULTS, Evidence, load_json, markdown_table, retrain_once, run_naskd,
                    study_command)

GROUPS = {"baseline": ("#00798c", "s"), "spos": ("#d1495b", "o"), "hyperband": ("#edae49", "D"),
          "gdas": ("#66a182", "v"), "random": ("#9aa5b1", "^"), "teacher": ("#000000", "*")}
SEED = re.compile(r"-s(\d+)(-retrain)?$")
RECIPES = {"matched-": "augmented set, 8 x 200,000 rows, logit MSE", "budget-": "SST-2 train, 6 epochs, logit MSE"}
PARAMS = {
    "out": (REQUIRED, "where the stand-in models and the bench run go (stand-ins reused when there)"),
    "prefixes": (["matched-", "budget-"], "the recorded runs drawn: those whose name starts with one of these"),
    "base_teacher": (None, "the stand-in teacher's base encoder (default: the recipe's, all-MiniLM-L6-v2)"),
    "stand_in_rows": (64, "training rows of each stand-in (their weights do not matter, only their shapes)"),
    "threads": (1, "threads of the bench"),
    "only": (None, "figure: the figure and table again from the bench already under out (no timing)"),
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


def architecture(metrics: dict) -> tuple[str, dict]:
    """(a file-name-safe key, `naskd retrain` flags) of the student a recorded run trained, from its config
    and description (``genotype emb300 | ...``, ``bilstm_soft (BiLSTM 150x2, ReLU 200)``,
    ``truncated_teacher (k=1)``)."""
    from naskd.space.macro import MacroGenotype

    student = (metrics.get("config") or {}).get("student")
    desc = metrics.get("description", "")
    if student == "genotype":
        g = MacroGenotype.from_description(desc.removeprefix("genotype "))
        return re.sub(r"[^a-z0-9]+", "_", g.describe()).strip("_"), {"student": "genotype", "genotype": g}
    cfg = metrics.get("config") or {}
    m = re.search(r"BiLSTM (\d+)x2, ReLU (\d+)", desc)
    if student == "bilstm_soft" and (m or "bilstm_hidden" in cfg):     # the recorded settings, else the description
        h, r = (cfg["bilstm_hidden"], cfg["bilstm_relu"]) if "bilstm_hidden" in cfg else (int(m[1]), int(m[2]))
        flags = {"student": "bilstm_soft", "bilstm_hidden": h, "bilstm_relu": r}
        if cfg.get("bilstm_embed") is not None:
            flags["bilstm_embed"] = cfg["bilstm_embed"]
        return f"bilstm_{h}_{r}" + (f"_e{flags['bilstm_embed']}" if "bilstm_embed" in flags else ""), flags
    m = re.search(r"\(k=(\d+)\)", desc)
    if student == "truncated_teacher" and (m or cfg.get("truncate_k") is not None):
        k = cfg["truncate_k"] if cfg.get("truncate_k") is not None else int(m[1])
        return f"truncated_{k}", {"student": "truncated_teacher", "truncate_k": k}
    raise SystemExit(f"cannot rebuild the student of {desc!r} (student {student!r}): add its kind to architecture()")


def stand_ins(args, archs: dict) -> tuple[Path, dict]:
    """The stand-in teacher and one stand-in student per architecture key, built under ``out`` (reused when
    finished there)."""
    out = Path(args.out).expanduser()
    teacher = out / "teacher"
    small = {"task": "sst2", "data_dir": args.data_dir, "max_train_examples": args.stand_in_rows, "epochs": 1}
    if (load_json(teacher / "metrics.json") or {}).get("status") != "finished":
        argv = ["teacher", "--task", "sst2", "--data-dir", args.data_dir, "--max-train-examples",
                str(args.stand_in_rows), "--epochs", "1", "--out", str(teacher)]
        run_naskd(argv + (["--teacher", args.base_teacher] if args.base_teacher else []), out=teacher)
    students = {}
    for key, flags in archs.items():
        flags = dict(flags)
        if "genotype" in flags:
            path = out / "genotypes" / f"{key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            flags["genotype"].save(path)
            flags["genotype"] = str(path)
        run = out / "students" / key
        retrain_once(run, {**small, **flags, "teacher": str(teacher), "kd": "logit_mse"})
        students[key] = run / "student"
    return teacher, students


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both speed and accuracy (naskd's own front rule), slowest first."""
    from naskd.search.pareto import non_dominated

    keep = non_dominated([(r["dev accuracy"], -r["speed (x teacher)"]) for r in rows])   # more speed = less time
    return sorted((r for r, k in zip(rows, keep) if k), key=lambda r: r["speed (x teacher)"])


def run(args) -> None:
    from naskd.bench import run_bench
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task

    gold = np.asarray(read_columns(get_task("sst2"), args.data_dir, "dev")["label"])
    if args.only not in (None, "figure"):
        raise SystemExit(f"only={args.only!r}: figure (or none)")
    prefixes = [args.prefixes] if isinstance(args.prefixes, str) else list(args.prefixes)
    ev = Evidence()
    names = sorted(n for n in ev.data["runs"] if n.startswith(tuple(prefixes)))
    if not names:
        raise SystemExit(f"no recorded run starting with {', '.join(prefixes)} in {ev.path}")
    teachers = {ev.stored(n).get("teacher_predictions") for n in names}
    if len(teachers) != 1 or None in teachers:
        raise SystemExit("the recorded runs were distilled against different teachers (or one is not recorded): "
                         "draw one teacher's students at a time (--set prefixes=[...])")
    t_labels = np.array([int(c) for c in teachers.pop()])
    students: dict = {}                # label -> {"group", "arch", "accs": [...]}
    archs: dict = {}
    params: dict = {}                  # architecture key -> the parameter counts its runs recorded
    for n in names:
        group, label = group_of(n)
        m = ev.metrics(n)
        key, flags = architecture(m)
        archs[key] = flags
        params.setdefault(key, set()).add(m.get("parameters"))
        recipe = next((r for p, r in RECIPES.items() if n.startswith(p)), "")
        s = students.setdefault(label, {"group": group, "arch": key, "accs": [], "recipe": recipe})
        if s["arch"] != key:
            raise SystemExit(f"{n}: another architecture than the other seeds of {label!r}")
        s["accs"].append(float((ev.labels(n, len(gold)) == gold).mean()))
    bench_out = Path(args.out).expanduser() / "bench"
    if args.only == "figure" and load_json(bench_out / "bench.json") is None:
        raise SystemExit(f"only=figure: no bench under {bench_out}; run the study without it first")
    teacher, built = stand_ins(args, archs)      # already there with only=figure: read, not trained again
    models = [*map(str, built.values()), str(teacher)]
    res = load_json(bench_out / "bench.json") if args.only == "figure" else None
    if res is not None and not {str(Path(m).resolve()) for m in models} <= {str(Path(r["path"]).resolve())
                                                                           for r in res["rows"]}:
        raise SystemExit(f"only=figure: the bench under {bench_out} lacks some stand-ins; run without it")
    if res is None:
        res = run_bench(models, data_dir=args.data_dir, out=str(bench_out), onnx=False, threads=args.threads,
                        overwrite=bench_out.exists())
    by_path = {str(Path(r["path"]).resolve()): r for r in res["rows"]}

    def row_of(path) -> dict:
        p = Path(path).resolve()
        return by_path.get(str(p)) or by_path[str(p.parent)]

    for key, path in built.items():   # the stand-in is the architecture the runs trained
        got, want = row_of(path)["params"], params[key] - {None}
        if want and want != {got}:
            raise SystemExit(f"the stand-in {path} has {got:,} parameters, its runs recorded {sorted(want)}")
    t_row = row_of(teacher)
    rows = [{"student": "teacher", "group": "teacher", "seeds": 1, "dev accuracy": float((t_labels == gold).mean()),
             "speed (x teacher)": 1.0, "params without embeddings": t_row["params without embeddings"]}]
    for label, s in students.items():
        r = row_of(built[s["arch"]])
        rows.append({"student": label, "group": s["group"], "recipe": s["recipe"], "seeds": len(s["accs"]),
                     "dev accuracy": float(np.mean(s["accs"])), "speed (x teacher)": r["torch x throughput"],
                     "params without embeddings": r["params without embeddings"]})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from naskd.utils.io import atomic_path, write_json, write_text

    fig, ax = plt.subplots(figsize=(10, 5))
    main_recipe = RECIPES["matched-"]
    for g in [*GROUPS, *sorted({r["group"] for r in rows} - set(GROUPS))]:    # a new group is drawn too
        color, marker = GROUPS.get(g, ("#555555", "x"))
        for filled in (True, False):
            pts = [r for r in rows if r["group"] == g and (r.get("recipe", main_recipe) == main_recipe) == filled]
            if pts:
                ax.scatter([r["speed (x teacher)"] for r in pts], [r["dev accuracy"] for r in pts], marker=marker,
                           s=70 if g == "teacher" else 40, zorder=3, edgecolors=color,
                           facecolors=color if filled else "none", label=g if filled else f"{g} (equal-budget recipe)")
    # the matched recipe's points are named (one label for points that coincide: the same run twice)
    named: dict = {}
    for r in rows:
        if r.get("recipe", main_recipe) == main_recipe:
            named.setdefault((r["speed (x teacher)"], r["dev accuracy"]), []).append(r["student"])
    for (x, y), labels in named.items():
        ax.annotate("\n".join(labels), (x, y), textcoords="offset points", xytext=(5, -3), fontsize=6.5)
    front = pareto_front([r for r in rows if r.get("recipe", main_recipe) == main_recipe])
    ax.step([r["speed (x teacher)"] for r in front], [r["dev accuracy"] for r in front], where="post",
            color="#777777", lw=0.8, ls="--", zorder=2, label="front (matched recipe)")
    ax.set_xscale("log")
    ax.set_xlabel(f"batch-128 CPU throughput relative to the teacher ({args.threads} thread(s), measured)")
    ax.set_ylabel("SST-2 dev accuracy (seed mean, last epoch)")
    ax.set_title("SST-2: students against the teacher, one `naskd bench` run", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with atomic_path(RESULTS / "pareto_sst2.png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    command = re.sub(r" --(only |set '?only=)figure'?", "", study_command())    # redrawn from the same bench
    note = (f"Accuracy: the committed dev predictions ({ev.path.name}) of {len(names)} finished runs and of the "
            "teacher they were distilled against; each student's retraining recipe is its study's (column recipe). "
            "Speed: each architecture rebuilt as an untrained stand-in "
            f"({args.stand_in_rows} training rows; CPU time does not depend on the weights) and timed with a "
            "stand-in of the teacher in one bench run. " + res["note"])
    text = "\n".join(["## SST-2 front: dev accuracy against measured CPU speed", "", f"Made with `{command}`.", "",
                      note, "", "![front](pareto_sst2.png)", "",
                      markdown_table(rows, ["student", "group", "recipe", "seeds", "dev accuracy", "speed (x teacher)",
                                            "params without embeddings"]), ""])
    write_text(RESULTS / "pareto_sst2.md", text)
    write_json(RESULTS / "pareto_sst2.json", {"command": command, "rows": rows, "bench": res["rows"]})
    print(text)
