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


_OUTPUT_FIELDS = ("logits", "states", "mask", "word_mask", "crf", "hidden_states")


@dataclass
class ModelOutput:
    """What every student, supernet path and teacher returns from ``forward``.

    ``logits``: (B, C) for classification, (B,) for regression, (B, W, T) CRF emissions for tagging;
    ``states``: the embeddings then each layer's output, (B, L, D) each (students; a truncated teacher's
    hidden states); ``mask``: (B, L) bool, the real tokens; ``word_mask``: (B, W) bool, the real words
    (tagging); ``crf``: the CRF layer the emissions feed (tagging; a reference to the model's own layer, what
    likelihood-based criteria and decoding use); ``hidden_states``: a teacher's (M_t + 1) x (B, L, H) when
    asked for (0: the embeddings). A field a model does not give is None.

    Fields are read as attributes; ``out["logits"]`` reads them too (KeyError for a field that is None), as
    the dicts of earlier versions were read."""
    logits: object
    states: list | None = None
    mask: object = None
    word_mask: object = None
    crf: object = None
    hidden_states: tuple | None = None

    def __getitem__(self, key: str):
        value = getattr(self, key, None) if key in _OUTPUT_FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default=None):
        value = getattr(self, key, None) if key in _OUTPUT_FIELDS else None
        return default if value is None else value

    def __contains__(self, key: str) -> bool:
        return key in _OUTPUT_FIELDS and getattr(self, key) is not None

    def keys(self) -> list[str]:
        return [k for k in _OUTPUT_FIELDS if getattr(self, k) is not None]
