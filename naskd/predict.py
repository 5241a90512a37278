"""Batched inference over an encoded split, in length order, returned in the split's order."""
from __future__ import annotations

import numpy as np
import torch

from .data.encode import Encoded, bucket_batches, collate
from .utils.runtime import to_device


@torch.no_grad()
def predict_logits(forward, data: Encoded, *, batch_size: int, device, pad_id: int = 0) -> list | np.ndarray:
    """Run ``forward(batch) -> logits`` over ``data``; tagging gives one [W_i, T] array per sentence."""
    out: list = [None] * len(data)
    for rows in bucket_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False):
        batch = to_device(collate(data, rows, pad_id=pad_id), device)
        logits = forward(batch).float().cpu().numpy()
        for b, i in enumerate(rows):
            if data.word_starts is not None:
                out[i] = logits[b, : len(data.word_starts[i])]
            else:
                out[i] = logits[b]
    if data.word_starts is not None:
        return out
    return np.stack(out)
