"""The fronts of finished spos / random searches as tables: each run's Pareto front (selection-split score
against predicted speed), its pick with predicted and measured times, and its wall time; the runs' records
(pareto.json, metrics.json) are copied into benchmarks/results so the tables can be rebuilt without the
run directories.

The study: `python benchmarks/run.py search_front_sst2_macro` (benchmarks/studies/). Writes
benchmarks/results/<name>.{md,json}.
"""
from __future__ import annotations

import json
from pathlib import Path

from common import REQUIRED, RESULTS, markdown_table, study_command

from naskd.utils.io import write_json, write_text

PARAMS = {
    "runs": (REQUIRED, "finished spos / random search run directories (a list)"),
    "name": (REQUIRED, "the table's name: benchmarks/results/<name>.{md,json}"),
}


def read_run(run: Path, record: dict) -> dict:
    """The run's pareto.json and metrics.json, from the directory or else from the committed record."""
    key = str(run)
    if (run / "pareto.json").is_file() and (run / "metrics.json").is_file():
        rec = {"pareto": json.loads((run / "pareto.json").read_text()),
               "metrics": json.loads((run / "metrics.json").read_text())}
        rec["metrics"].pop("supernet_history", None)
        record[key] = rec
        return rec
    if key in record:
        return record[key]
    raise SystemExit(f"{run} has no finished search (pareto.json, metrics.json) and is not in the record")


def tables(name: str, rec: dict) -> str:
    doc, m = rec["pareto"], rec["metrics"]
    pick = next(c for c in doc["candidates"] if c["trial"] == doc["pick"])
    front = sorted((c for c in doc["candidates"] if c["on_front"]), key=lambda c: -c["speedup"])
    rows = [{"architecture": c["text"], f"selection {doc['metric']}": c["score"],
             "speedup (b128, predicted)": c["speedup"], "b1 ms (predicted)": c["b1_ms"],
             "params (no emb.)": c["params_without_embeddings"],
             "pick": "yes" if c is pick or c["trial"] == pick["trial"] else "",
             "baseline": c.get("baseline") or ""} for c in front]
    base = [c for c in doc["candidates"] if c.get("baseline")]
    for c in base:
        if not c["on_front"]:
            rows.append({"architecture": c["text"], f"selection {doc['metric']}": c["score"],
                         "speedup (b128, predicted)": c["speedup"], "b1 ms (predicted)": c["b1_ms"],
                         "params (no emb.)": c["params_without_embeddings"], "pick": "",
                         "baseline": f"{c['baseline']} (not on the front)"})
    lat = pick.get("latency", {})
    lat_rows = [{"threads": k.split("_")[1], "b1 ms predicted": v["predicted_b1_ms"],
                 "b1 ms measured": v["measured_b1_ms"], "b128 ms predicted": v["predicted_b128_ms"],
                 "b128 ms measured": v["measured_b128_ms"], "teacher b128 ms": v["teacher_b128_ms"],
                 "speedup predicted": v["predicted_speedup"], "speedup measured": v["measured_speedup"]}
                for k, v in sorted(lat.items())]
    seconds = {k: m[k] for k in ("supernet_seconds", "discrete_search_seconds_this_process", "train_seconds",
                                 "wall_seconds_this_process") if k in m}
    head = (f"### {name}: {m['strategy']} on {m['task']}, {m['space']} space\n\n"
            f"{len(doc['candidates'])} architectures evaluated on {doc['selection_examples']} selection rows carved "
            f"from train; {len(front)} on the front; constraint: {doc['constraint']['text']}; latency at "
            f"{doc['threads']} thread(s), lengths {doc['lengths']}; teacher {doc['teacher']['b1_ms']:.2f} ms at batch "
            f"1, {doc['teacher']['b128_ms']:.1f} ms per batch of 128. Seconds: "
            + ", ".join(f"{k} {v}" for k, v in seconds.items()) + ".\n\nThe front (fastest first):\n")
    return "\n".join([head, markdown_table(rows, list(rows[0])), "",
                      f"The pick, {pick['text']}, predicted and measured (whole model, same protocol):", "",
                      markdown_table(lat_rows, list(lat_rows[0])) if lat_rows else "(not recorded)", ""])


def run(args) -> None:
    runs = [Path(r).expanduser() for r in ([args.runs] if isinstance(args.runs, str) else args.runs)]
    rec_path = RESULTS / f"{args.name}.json"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    parts = [f"## Search fronts ({args.name})", "", f"Made with `{study_command()}`.", ""]
    for r in runs:
        parts.append(tables(r.name, read_run(r, record)))
    write_json(rec_path, record)
    text = "\n".join(parts)
    write_text(RESULTS / f"{args.name}.md", text)
    print(text)

