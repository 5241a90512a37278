"""Search strategies: one registration per strategy (``--strategy NAME``), like ops and criteria.

A strategy receives the prepared :class:`SearchEnv` (task, teacher, data with cached teacher outputs,
criteria, run directory, space) and trains through :func:`naskd.train.fit`, the loop teacher fine-tuning
and retraining share: it supplies its step and the loop keeps checkpoints, resume, NaN checks, logging,
progress and ``--stop-after-steps``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError

STRATEGIES: dict[str, type] = {}


def register_strategy(cls):
    """Class decorator: make ``cls`` (a :class:`Strategy` with a ``name``) ``--strategy <name>``."""
    STRATEGIES[cls.name] = cls
    return cls


def _load() -> None:
    """Import the modules that register the built-in strategies."""
    import importlib

    for mod in ("darts", "oneshot", "multifidelity", "gdas"):
        importlib.import_module(f"{__name__}.{mod}")


def known_strategies() -> list[str]:
    _load()
    return sorted(STRATEGIES)


def get_strategy(name: str) -> type:
    _load()
    if name not in STRATEGIES:
        raise ConfigError(f"unknown search strategy '{name}'; known: " + "; ".join(
            f"{n} ({STRATEGIES[n].summary})" for n in sorted(STRATEGIES)))
    return STRATEGIES[name]


@dataclass
class SearchEnv:
    """Everything prepared before a strategy runs."""
    cfg: Any                       # naskd.search.run.SearchConfig
    spec: Any                      # the task
    teacher_dir: Path
    teacher_info: dict
    data: Any                      # naskd.pipeline.DistillData
    kd: Any                        # naskd.distill.DistillationLoss (set up on data)
    run_dir: Path
    device: Any
    resume: bool
    space: Any                     # SearchSpace (darts) or a OneShotSpace
    t_start: float
    latency: Any = None            # one-shot strategies: naskd.search.strategy.oneshot.Latency
    overwrite: bool = False        # the run replaces an earlier one (--overwrite): so does its --storage study


class Strategy:
    name = ""
    summary = ""
    space_kinds: tuple = ("cell",)
    samples_paths = False          # whether --sampling means anything to it (a one-shot supernet's paths)

    @classmethod
    def check(cls, cfg, space_kind: str) -> None:
        """Refuse, before any work, settings this strategy cannot run (ConfigError, one line)."""
        if space_kind not in cls.space_kinds:
            raise ConfigError(f"--strategy {cls.name} searches {' and '.join(cls.space_kinds)} spaces; "
                              f"{cfg.space} is a {space_kind} space (use --strategy "
                              f"{' or '.join(n for n in known_strategies() if space_kind in STRATEGIES[n].space_kinds)})")
        if cfg.sampling != "uniform" and not cls.samples_paths:
            raise ConfigError(f"--sampling {cfg.sampling} is a spos setting (how its supernet's path is drawn each "
                              f"step); --strategy {cls.name} does not use it")

    def __init__(self, env: SearchEnv):
        self.env = env

    def run(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def processes(*modules) -> dict:
        """What metrics.json says of the processes that trained: their number and, under torchrun, whether
        every rank's copy of ``modules`` (supernet, criteria, architecture parameters) holds the same tensors
        after training (DDP keeps weights in step; architecture gradients are reduced by hand: a difference
        is a bug, and is warned about). A collective: every rank calls it."""
        from ...utils import dist

        if dist.world_size() == 1:
            return {"processes": 1}
        same = dist.agree(dist.digest(*modules))
        if not same:
            import warnings

            warnings.warn("the processes' copies of the supernet differ after training: the ranks did not train "
                          "in step (a bug in naskd; the rank-0 copy is the one used)")
        return {"processes": dist.world_size(), "replicas_agree": same}
