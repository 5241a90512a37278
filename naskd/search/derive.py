"""Derive a genotype again from a search run's recorded alphas, under other derivation rules (edges kept
per node, a cap on identity edges, another epoch), without searching again."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from ..errors import NaskdError
from ..genotype import Genotype, parse
from ..space.spec import SearchSpace
from ..utils.io import read_json


def derive(run_dir: str | os.PathLike, *, epoch: int | None = None, top_k: int | None = None,
           max_identity: int | None = None) -> Genotype:
    """The genotype the alphas of ``epoch`` of a `naskd search` run derive with ``top_k`` edges per node and at
    most ``max_identity`` identity edges per cell.

    ``epoch`` is 1-based as history.json's ``epoch`` counts: 1 to the epochs the run finished (None: the last).
    ``top_k``: 1 to nodes + 1 (None: the run's). ``max_identity``: 0 or more (None: no cap). A value outside
    its range raises :class:`NaskdError` naming the range; 0 is never read as "the default"."""
    for name, value, low in (("epoch", epoch, 1), ("top-k", top_k, 1), ("max-identity", max_identity, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise NaskdError(f"--{name} must be an integer >= {low}, got {value!r}")
    run = Path(run_dir)
    hist_path, cfg_path = run / "history.json", run / "config.yaml"
    missing = (f"{run} is not a search run with a finished epoch: {{}} is missing (run `naskd search`, or "
               "resume it with --resume until an epoch ends)")
    if not cfg_path.is_file():
        raise NaskdError(missing.format(cfg_path.name))
    history = read_json(hist_path, missing=missing.format(hist_path.name))
    if not isinstance(history, list) or not history:
        raise NaskdError(f"{hist_path} holds no finished epoch yet; resume the search with --resume")
    if epoch is None:
        epoch = len(history)
    if not 1 <= epoch <= len(history):
        raise NaskdError(f"--epoch {epoch} is out of range: {run} has epochs 1 to {len(history)}")
    cfg = yaml.safe_load(cfg_path.read_text())
    try:
        space = SearchSpace.from_dict(cfg["resolved_space"], f"{cfg_path} (resolved_space)")
        alphas = history[epoch - 1]["alphas"]
        if list(alphas["op_names"]) != list(space.ops):
            raise NaskdError(f"{hist_path}: epoch {epoch} records ops {alphas['op_names']}, the run's space has "
                             f"{list(space.ops)}")
        # the history holds the softmaxed weights: their logs derive exactly what the raw alphas did
        ops = torch.tensor(alphas["ops"], dtype=torch.float64).clamp_min(1e-30).log()
        agg = torch.tensor(alphas["agg"], dtype=torch.float64).clamp_min(1e-30).log() if alphas["agg"] else None
        layers = int(cfg["layers"])
        width = int(space.width if cfg.get("width") is None else cfg["width"])
        k = int(cfg.get("top_k", 2)) if top_k is None else top_k
    except (KeyError, TypeError, ValueError) as e:
        raise NaskdError(f"{run}: cannot read the alphas of epoch {epoch} ({type(e).__name__}: {e})") from None
    if k < 1 or k > space.nodes + 1:
        raise NaskdError(f"--top-k must be between 1 and {space.nodes + 1} for {space.nodes} nodes, got {k}")
    return parse(ops, agg, space, layers=layers, width=width, k=k, max_identity=max_identity)


def pick_again(run_dir: str | os.PathLike, *, speedup: float | None = None, latency_ms: float | None = None):
    """(genotype, candidate): the most accurate architecture of a spos, random or hyperband run's pareto.json meeting
    the constraint (none: the most accurate), without searching again. NaskdError when the run has no
    front, or when no evaluated architecture meets the constraint (naming the fastest one's speed)."""
    from ..space.oneshot import SPACE_KINDS, space_kind
    from . import pareto as P

    if speedup is not None and latency_ms is not None:
        raise NaskdError("give --speedup or --latency-ms, not both")
    run = Path(run_dir)
    if not (run / "pareto.json").is_file() and (run / "history.json").is_file():
        raise NaskdError(f"{run} is a darts run: it has alphas, not a front; --speedup and --latency-ms pick from "
                         "a spos, random or hyperband run's pareto.json")
    doc = P.load_front(run)
    c = P.pick(doc["candidates"], speedup=speedup, latency_ms=latency_ms)
    kind = doc.get("space_kind", "cell")
    if kind == "cell":
        g = Genotype.from_dict(c["genotype"], f"{run / 'pareto.json'}")
    else:
        from ..errors import ConfigError

        try:
            space_kind(kind)
        except ConfigError as e:
            raise NaskdError(f"{run / 'pareto.json'}: {e}; it is corrupt or from a newer naskd") from None
        g = SPACE_KINDS[kind].genotype_class.from_dict(c["genotype"], f"{run / 'pareto.json'}")
    return g, c
