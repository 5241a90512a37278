"""Fine-tune the default teacher on every GLUE task with its recipe (resumable: finished runs are read,
stopped ones resumed) and tabulate dev metrics and times.
The study: `python benchmarks/run.py teachers` (benchmarks/studies/); writes benchmarks/results/teachers.{md,json}.
"""
from __future__ import annotations

import json
from pathlib import Path

from common import DATA_DIR, publish

from naskd.teachers.finetune import finetune_teacher, resolve_teacher_config

PARAMS = {
    "tasks": (["sst2", "cola", "mrpc", "rte", "stsb"], "the GLUE tasks, one teacher each"),
    "runs": ("runs", "where the teacher runs go (RUNS/TASK-teacher; resumed when there)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def run(args) -> None:
    rows = []
    for task in args.tasks:
        out = Path(args.runs) / f"{task}-teacher"
        mpath = out / "metrics.json"
        m = json.loads(mpath.read_text()) if mpath.is_file() else None
        if m is None or m.get("status") != "finished":
            cfg = resolve_teacher_config({"task": task, "data_dir": args.data_dir, "out": str(out)})
            m = finetune_teacher(cfg, resume=bool(m))
        dev = {k: round(v, 4) for k, v in m["dev"].items() if k != "epoch"}
        rows.append({"task": task, "dev metrics (best epoch)": json.dumps(dev), "best epoch": m["best_epoch"],
                     "epochs": m["epochs_done"], "train examples": m["train_examples"],
                     "train minutes": m["train_seconds"] / 60})
    publish("teachers", "Teachers: all-MiniLM-L6-v2 fine-tuned by `naskd teacher` (recipes in teachers/)", rows,
            ["task", "dev metrics (best epoch)", "best epoch", "epochs", "train examples", "train minutes"],
            notes="Each run is `naskd teacher --task TASK` with its recipe; train minutes exclude evaluation and "
                  "depend on what else ran (the thread count above is this script's; a run it finds finished is "
                  "read, not timed again). The dev split selects the best epoch and reports it, as GLUE dev "
                  "results usually are.")
