"""Small typed records passed between the training loop, the strategies and the criteria (no loop state
travels in a batch's dict of tensors)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where training stands at one step, as :func:`naskd.train.fit` passes it to ``loss_fn`` and
    ``before_step``: a criterion's schedule (structured KD's lambda) and a strategy's random choices (the path
    of a step) are functions of it, so a resumed run makes the same ones.

    ``epoch``: 0-based epoch; ``epochs``: epochs in all; ``step``: the global step, 0-based; ``fraction``:
    the share of all training steps done before this one, in [0, 1)."""
    epoch: int = 0
    epochs: int = 1
    step: int = 0
    fraction: float = 0.0
