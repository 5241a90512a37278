"""Batched inference over an encoded split, in length order, returned in the split's order."""
from __future__ import annotations

import numpy as np
import torch

from .data.encode import Encoded, bucket_batches, collate
from .data.metrics import predictions_from_logits, score
from .data.tasks import TAGGING
from .utils.runtime import to_device


@torch.no_grad()
def predict_logits(forward, data: Encoded, *, batch_size: int, device, pad_id: int = 0, crf=None) -> list | np.ndarray:
    """Run ``forward(batch) -> logits`` over ``data``. Sentence tasks: an (N, C) or (N,) array. Tagging:
    one (W_i, T) emission array per sentence, or with ``crf`` its Viterbi tags (W_i,)."""
    out: list = [None] * len(data)
    for rows in bucket_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False):
        batch = to_device(collate(data, rows, pad_id=pad_id), device)
        logits = forward(batch).float()
        if crf is not None:
            logits = crf.viterbi(logits, batch["word_mask"])[0]
        logits = logits.cpu().numpy()
        for b, i in enumerate(rows):
            if data.word_starts is not None:
                out[i] = logits[b, : len(data.word_starts[i])]
            else:
                out[i] = logits[b]
    if data.word_starts is not None:
        return out
    return np.stack(out)


def evaluate_model(model, spec, data: Encoded, *, batch_size: int, device, pad_id: int = 0):
    """(metrics, outputs) of ``model`` on ``data``: sentence-task logits, or tagging Viterbi paths when the
    model has a CRF. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    crf = getattr(model, "crf", None) if spec.kind == TAGGING else None
    out = predict_logits(lambda b: model(**b)["logits"], data, batch_size=batch_size, device=device,
                         pad_id=pad_id, crf=crf)
    model.train(was_training)
    return score(spec, data.labels, predictions_from_logits(spec, out)), out
