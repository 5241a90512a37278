"""Task metrics, computed by scikit-learn, scipy and seqeval (conlleval-compatible spans)."""
from __future__ import annotations

import numpy as np

from .tasks import REGRESSION, TAGGING


def accuracy(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(y_true, y_pred))}


def accuracy_f1(y_true, y_pred) -> dict:
    from sklearn.metrics import f1_score

    out = accuracy(y_true, y_pred)
    out["f1"] = float(f1_score(y_true, y_pred, zero_division=0))
    return out


def matthews(y_true, y_pred) -> dict:
    from sklearn.metrics import matthews_corrcoef

    out = accuracy(y_true, y_pred)
    out["mcc"] = float(matthews_corrcoef(y_true, y_pred))
    return out


def correlation(y_true, y_pred) -> dict:
    from scipy.stats import pearsonr, spearmanr

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if np.std(y_pred) == 0 or np.std(y_true) == 0:  # pearsonr warns and returns nan on constants
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": float(pearsonr(y_true, y_pred)[0]), "spearman": float(spearmanr(y_true, y_pred)[0])}


def span_f1(y_true: list[list[str]], y_pred: list[list[str]]) -> dict:
    """Span precision/recall/F1 over IOB2 tag sequences, as conlleval counts them (seqeval's default mode)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
    }


METRICS = {
    "accuracy": accuracy,
    "accuracy_f1": accuracy_f1,
    "matthews": matthews,
    "correlation": correlation,
    "span_f1": span_f1,
}


def predictions_from_logits(spec, logits):
    """Predictions of a task from model outputs: argmax labels (N,) for classification, floats (N,) for
    regression; for tagging each sentence's Viterbi path (W,) passes through and emission arrays (W, T) are
    decoded per word."""
    if spec.kind == REGRESSION:
        return np.asarray(logits, dtype=np.float64).reshape(-1)
    if spec.kind == TAGGING:
        return [np.asarray(x) if np.ndim(x) == 1 else np.asarray(x).argmax(-1) for x in logits]
    return np.asarray(logits).argmax(-1)


def score(spec, gold, pred) -> dict:
    """The task's metric (``spec.metric`` in :data:`METRICS`) of predictions against gold labels; tagging
    label ids are turned into their names first (span F1 reads IOB2 tags)."""
    if spec.kind == TAGGING:
        g = [[spec.labels[t] for t in s] for s in gold]
        p = [[spec.labels[t] for t in s] for s in pred]
        return METRICS[spec.metric](g, p)
    return METRICS[spec.metric](np.asarray(gold), np.asarray(pred))
