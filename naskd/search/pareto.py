"""The Pareto front of evaluated architectures (score up, latency down), the pick under a constraint, and
its picture.

A candidate is a dict as ``pareto.json`` holds it: ``score`` (the selection split's main metric, higher is
better), ``b1_ms`` (batch-1 milliseconds per sentence, the candidate measured whole as ``b1_source``
says), ``b128_ms`` (milliseconds per batch of 128 predicted from the latency table), ``speedup`` (the
teacher's batch-128 time over the candidate's: its throughput relative to the teacher's) and ``genotype``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import NaskdError


def non_dominated(points: list[tuple[float, float]]) -> list[bool]:
    """For (score, time) pairs, True where no other point has score >= and time <= with one strictly
    better (maximise the score, minimise the time). Equal points are all on the front. O(n^2), n in the
    hundreds."""
    out = []
    for i, (s, t) in enumerate(points):
        dominated = any((s2 >= s and t2 <= t) and (s2 > s or t2 < t) for j, (s2, t2) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def meets(c: dict, *, speedup: float | None = None, latency_ms: float | None = None) -> bool:
    """Whether candidate ``c`` meets the constraint (none given: every candidate does)."""
    if speedup is not None and not c["speedup"] >= speedup:
        return False
    if latency_ms is not None and not c["b1_ms"] <= latency_ms:
        return False
    return True


def constraint_text(speedup: float | None, latency_ms: float | None) -> str:
    if speedup is not None:
        return f"at least {speedup:g}x the teacher's batch-128 throughput"
    if latency_ms is not None:
        return f"at most {latency_ms:g} ms at batch 1"
    return "none"


def pick(candidates: list[dict], *, speedup: float | None = None, latency_ms: float | None = None) -> dict:
    """The highest-scoring candidate meeting the constraint (ties: the faster at batch 128, then the
    earlier). Raises :class:`NaskdError` naming the fastest candidate's speed when none meets it."""
    ok = [c for c in candidates if meets(c, speedup=speedup, latency_ms=latency_ms)]
    if not ok:
        fastest = max(candidates, key=lambda c: c["speedup"]) if candidates else None
        seen = (f"; the fastest evaluated is {fastest['speedup']:.2f}x the teacher's throughput, "
                f"{fastest['b1_ms']:.2f} ms at batch 1 ({fastest['text']})") if fastest else ""
        raise NaskdError(f"no evaluated architecture meets {constraint_text(speedup, latency_ms)}{seen}; relax "
                         "the constraint")
    return max(ok, key=lambda c: (c["score"], -c["b128_ms"], -c.get("trial", 0)))


def mark_front(candidates: list[dict]) -> None:
    """Set ``on_front`` on every candidate (score against batch-128 time)."""
    flags = non_dominated([(c["score"], c["b128_ms"]) for c in candidates])
    for c, f in zip(candidates, flags):
        c["on_front"] = bool(f)


def plot_front(candidates: list[dict], path: str | os.PathLike, *, title: str, metric: str,
               pick_: dict | None = None, baselines: dict | None = None, speedup: float | None = None) -> Path:
    """pareto.png: selection score against speed relative to the teacher (batch-128 throughput, log
    scale), the front highlighted, the pick circled, the baselines of the space labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [c["speedup"] for c in candidates]
    ys = [c["score"] for c in candidates]
    ax.scatter(xs, ys, s=12, c="#9aa5b1", label="evaluated")
    front = sorted((c for c in candidates if c.get("on_front")), key=lambda c: c["speedup"])
    if front:
        ax.plot([c["speedup"] for c in front], [c["score"] for c in front], "-o", c="#d1495b", ms=4,
                label="Pareto front")
    if pick_ is not None:
        ax.scatter([pick_["speedup"]], [pick_["score"]], s=120, facecolors="none", edgecolors="k", linewidths=1.5,
                   label="pick", zorder=5)
    for name, c in (baselines or {}).items():
        ax.scatter([c["speedup"]], [c["score"]], marker="s", s=40, c="#00798c", zorder=4)
        ax.annotate(name, (c["speedup"], c["score"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if speedup is not None:
        ax.axvline(speedup, ls="--", c="k", lw=0.8, label=f"constraint {speedup:g}x")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 8 and all(math.isfinite(x) for x in xs):
        ax.set_xscale("log")
    ax.set_xlabel("throughput relative to the teacher (batch 128, predicted)")
    ax.set_ylabel(f"selection-split {metric} (inherited weights)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def load_front(run_dir: str | os.PathLike) -> dict:
    """pareto.json of a spos or random search run; NaskdError naming what is missing."""
    from ..utils.io import read_json

    run = Path(run_dir)
    d = read_json(run / "pareto.json", missing=f"{run} has no pareto.json (a finished `naskd search --strategy spos` "
                                               "or `random` run writes one)")
    if not isinstance(d, dict) or not isinstance(d.get("candidates"), list) or not d["candidates"]:
        raise NaskdError(f"{run / 'pareto.json'} holds no evaluated candidates; it is corrupt or the search had "
                         "not finished")
    for i, c in enumerate(d["candidates"]):
        if not isinstance(c, dict) or not all(k in c for k in ("score", "b1_ms", "b128_ms", "speedup", "genotype")):
            raise NaskdError(f"{run / 'pareto.json'}: candidate {i} lacks score, b1_ms, b128_ms, speedup or "
                             "genotype; it is corrupt")
        for k in ("score", "b1_ms", "b128_ms", "speedup"):
            v = c[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise NaskdError(f"{run / 'pareto.json'}: candidate {i} has {k} {v!r}, not a finite number; it is "
                                 "corrupt (search again, or restore the file the search wrote)")
        if not isinstance(c["genotype"], dict):
            raise NaskdError(f"{run / 'pareto.json'}: candidate {i}'s genotype is not a JSON object; it is corrupt")
        c.setdefault("text", f"candidate {i}")
    return d
