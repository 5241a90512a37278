"""Turning logits into task metrics."""
from __future__ import annotations

import numpy as np

from .data.metrics import METRICS
from .data.tasks import REGRESSION, TAGGING, TaskSpec


def predictions_from_logits(spec: TaskSpec, logits):
    if spec.kind == REGRESSION:
        return np.asarray(logits, dtype=np.float64).reshape(-1)
    if spec.kind == TAGGING:
        return [np.asarray(x).argmax(-1) for x in logits]
    return np.asarray(logits).argmax(-1)


def score(spec: TaskSpec, gold, pred) -> dict:
    if spec.kind == TAGGING:
        g = [[spec.labels[t] for t in s] for s in gold]
        p = [[spec.labels[t] for t in s] for s in pred]
        return METRICS[spec.metric](g, p)
    return METRICS[spec.metric](np.asarray(gold), np.asarray(pred))
