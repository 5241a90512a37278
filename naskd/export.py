"""`naskd export`: a trained model as ONNX or TorchScript, with dynamic batch and length axes.

The exported graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, (B, L)) and, for
tagging models, ``word_starts`` (int64, (B, W)); it returns ``logits``. Inputs a model ignores (the segment
ids of a single-sentence BiLSTM) are left out of the ONNX graph: feed what ``session.get_inputs()`` lists.
Criterion parameters
(projections, memories) are not part of a student, so they are never exported.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .data.tasks import TAGGING
from .errors import NaskdError
from .modeldir import LoadedModel, load_model
from .utils.io import writing
from .utils.rundir import check_output_file

FORMATS = ("onnx", "torchscript")


class LogitsOnly(nn.Module):
    """(input_ids, attention_mask, token_type_ids[, word_starts]) -> logits, for tracing."""

    def __init__(self, model: nn.Module, tagging: bool):
        super().__init__()
        self.model, self.tagging = model, tagging

    def forward(self, input_ids, attention_mask, token_type_ids, word_starts=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          word_starts=word_starts)["logits"]


def example_inputs(loaded: LoadedModel, batch: int = 2, length: int = 9) -> dict:
    """A small batch with one padded row (so masking is traced as data, not as a constant)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0
    ids = ids * mask
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if loaded.info["kind"] == TAGGING:
        out["word_starts"] = torch.arange(1, 4).clamp_max(length - 1).repeat(batch, 1)
    return out


def input_names(loaded: LoadedModel) -> list[str]:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return names + ["word_starts"] if loaded.info["kind"] == TAGGING else names


def export_onnx(loaded: LoadedModel, path: str | os.PathLike, opset: int = 17) -> Path:
    path = Path(path)
    names = input_names(loaded)
    wrapper = LogitsOnly(loaded.model, loaded.info["kind"] == TAGGING).eval()
    ex = example_inputs(loaded)
    axes = {n: {0: "batch", 1: "words" if n == "word_starts" else "length"} for n in names}
    axes["logits"] = {0: "batch", 1: "words"} if loaded.info["kind"] == TAGGING else {0: "batch"}
    with writing(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")          # tracer chatter about Python values; checked by tests instead
        # the TorchScript-based exporter: no extra dependency (the dynamo one needs onnxscript)
        torch.onnx.export(wrapper, tuple(ex[n] for n in names), str(tmp), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset)
    wrapper.eval()  # export restores the wrapper's mode recursively; keep the model in eval mode
    loaded.model.eval()
    return path


def export_torchscript(loaded: LoadedModel, path: str | os.PathLike) -> Path:
    path = Path(path)
    names = input_names(loaded)
    wrapper = LogitsOnly(loaded.model, loaded.info["kind"] == TAGGING).eval()
    ex = example_inputs(loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, tuple(ex[n] for n in names), check_trace=False)
    with writing(path) as tmp:
        traced.save(str(tmp))
    return path


def export(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None, *,
           overwrite: bool = False) -> Path:
    """Write the model of ``model_path`` (student directory or teacher run) as ``fmt`` to ``out`` (default
    ``<model>/model.onnx`` or ``model.pt``); return the path written. :class:`NaskdError` for an unknown
    format, a model path that is not a model directory or whose files are corrupt, and a destination that
    is a directory, exists (without ``overwrite``) or cannot be written."""
    if fmt not in FORMATS:
        raise NaskdError(f"unknown export format '{fmt}'; known: {', '.join(FORMATS)}")
    if out:
        check_output_file(out, overwrite=overwrite)       # before the model is loaded
    loaded = load_model(model_path)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    dest = check_output_file(out or loaded.path / f"model{suffix}", overwrite=overwrite)
    return export_onnx(loaded, dest) if fmt == "onnx" else export_torchscript(loaded, dest)
