"""Helpers shared by the benchmark scripts: timing and Markdown/JSON tables."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from naskd.utils.io import write_json, write_text
from naskd.utils.runtime import median_seconds

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def timed(fn, repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    return median_seconds(fn, repeat, warmup)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def publish(name: str, title: str, rows: list[dict], columns: list[str], command: str, notes: str = "") -> str:
    table = markdown_table(rows, columns)
    text = f"## {title}\n\nMeasured with `{command}` on {machine()}.\n\n{table}\n"
    if notes:
        text += f"\n{notes}\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{name}.md", text)
    write_json(RESULTS / f"{name}.json", {"title": title, "command": command, "machine": machine(),
                                          "rows": rows, "notes": notes})
    print(text, flush=True)
    return text


def retrain_once(out: Path, flags: dict) -> dict:
    """`naskd retrain` into ``out``, resumably: a finished run is read, a stopped one resumed (one stopped
    before its first checkpoint started again)."""
    from naskd.students.retrain import resolve_retrain_config, retrain

    m = load_json(out / "metrics.json")
    if m is not None and m.get("status") == "finished":
        return m
    resume = (out / "checkpoint.pt").is_file()
    # a run stopped before its first checkpoint left nothing to keep (its config at most): start it again
    restart = not resume and out.is_dir() and any(out.iterdir())
    return retrain(resolve_retrain_config({**flags, "out": str(out)}), resume=resume, overwrite=restart)


def load_json(path) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None
