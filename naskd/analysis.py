"""`naskd analyze cka`: how much of the teacher's feature structure a student carries (Jung et al.).

Features: both (N, D) masked means over real tokens of the penultimate layer (teacher
``hidden_states[-2]``, the student's second-to-last cell). The dev split is cut into mini-batches of
``batch_size`` in file order; a last batch shorter than the others is left out.

- ``minibatch_cka`` (the headline number): the mini-batch estimator of Nguyen et al. 2021,
  unbiased HSIC (Song et al. 2012) of each batch summed over the batches, then normalised
  (:func:`naskd.distill.functional.minibatch_cka`). It converges to the population CKA as batches are
  added; ``full_cka`` is linear CKA of all the examples used at once, for comparison.
- ``matrix``: entry (i, j) is linear CKA between the teacher's features of batch i and the student's of
  batch j; ``diagonal_mean`` is the mean of per-batch CKA shown in Jung et al.'s Table 6 and
  ``offdiagonal_mean`` its chance level. Averaging per-batch CKA is biased upwards at small batch sizes
  (the bias does not shrink with more batches), so use ``minibatch_cka`` to compare with the full data.
- ``layerwise`` (optional): a (student states x teacher layers) matrix of linear CKA over the whole dev
  split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.encode import collate, encode
from .data.readers import load_split, subsample
from .data.tasks import get_task
from .distill.functional import cka, masked_mean, minibatch_cka
from .errors import NaskdError
from .teachers.cache import HiddenRequest, TeacherCache
from .teachers.model import read_teacher_info
from .utils.io import write_json
from .utils.rundir import check_run_dir, data_root_or_none, prepare_run_dir
from .utils.runtime import pick_device, to_device


@torch.no_grad()
def student_features(model, data, batch_size: int, pad_id: int = 0,
                     device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Masked-mean features of every student state (embeddings, cell 1..M_s), each (N, D_s) float32 on the
    CPU, in data order; the model runs in eval mode on ``device`` (where it is moved)."""
    model = model.to(device).eval()
    feats = None
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        out = model(**to_device(collate(data, rows, pad_id=pad_id), torch.device(device)))
        pooled = [masked_mean(s, out["mask"]).float().cpu().numpy() for s in out["states"]]
        feats = pooled if feats is None else [np.concatenate([a, b]) for a, b in zip(feats, pooled)]
    return feats


def batch_cka(teacher: np.ndarray, student: np.ndarray, batch_size: int) -> dict:
    """CKA between paired teacher features (N, D_t) and student features (N, D_s), cut into
    N // batch_size mini-batches in order (a shorter last batch is left out).

    Returns ``minibatch_cka`` (Nguyen et al. 2021: unbiased HSIC of Song et al. 2012 summed over
    the batches, then normalised; :func:`naskd.distill.functional.minibatch_cka`), ``full_cka`` (linear
    CKA of all the examples used at once, Kornblith et al. 2019), ``matrix`` (nb, nb) of per-batch
    linear CKA between teacher batch i and student batch j, its ``diagonal_mean`` (Jung et al.'s Table 6
    statistic, biased upwards at small batch sizes) and ``offdiagonal_mean`` (None for one batch), with
    ``batch_size``, ``batches`` and ``examples_used``. All CKA values are unitless, computed in float64.
    Raises NaskdError if batch_size < 4 (the unbiased HSIC needs 4 examples), if there is no full batch,
    or if the two arrays do not pair up."""
    t, s = np.asarray(teacher, dtype=np.float64), np.asarray(student, dtype=np.float64)
    if t.ndim != 2 or s.ndim != 2 or len(t) != len(s):
        raise NaskdError(f"CKA needs paired (N, D) features; got teacher {t.shape} and student {s.shape}")
    if batch_size < 4:
        raise NaskdError(f"batch size {batch_size}: the mini-batch CKA estimator (unbiased HSIC) needs batches "
                         "of at least 4 examples")
    nb = len(t) // batch_size
    if nb < 1:
        raise NaskdError(f"{len(t)} examples are too few for one batch of {batch_size}")
    used = nb * batch_size
    tb = [torch.from_numpy(t[i * batch_size:(i + 1) * batch_size]) for i in range(nb)]
    sb = [torch.from_numpy(s[i * batch_size:(i + 1) * batch_size]) for i in range(nb)]
    mat = np.array([[float(cka(tb[i], sb[j])) for j in range(nb)] for i in range(nb)])
    off = mat[~np.eye(nb, dtype=bool)]
    return {"batch_size": batch_size, "batches": nb, "examples_used": used,
            "minibatch_cka": float(minibatch_cka(zip(tb, sb))),
            "minibatch_estimator": "Nguyen et al. 2021: unbiased HSIC (Song et al. 2012) of each batch summed "
                                   "over the batches, then normalised",
            "full_cka": float(cka(torch.from_numpy(t[:used]), torch.from_numpy(s[:used]))),
            "diagonal_mean": float(np.trace(mat) / nb),
            "offdiagonal_mean": float(off.mean()) if off.size else None, "matrix": mat.round(6).tolist()}


def cka_analysis(model_dir: str, teacher_dir: str, *, task: str | None = None, data_dir=None,
                 batch_size: int = 32, max_examples: int | None = None, layerwise: bool = False,
                 cache_dir=None, device: str = "auto") -> dict:
    """The ``naskd analyze cka`` result for a student directory against its teacher run on the dev split
    (see the module docstring and :func:`batch_cka`); the student and, for outputs not yet cached, the
    teacher run on ``device`` (auto, cpu or cuda), the CKA in float64 on the CPU. Raises NaskdError for a
    student of another task, batch_size < 4, a dev split too small for two batches, or cuda without a GPU."""
    from .students.io import load_student

    if batch_size < 4:
        raise NaskdError(f"--batch-size {batch_size}: the mini-batch CKA estimator (unbiased HSIC) needs "
                         "batches of at least 4 examples")
    dev_ = pick_device(device)
    model, tokenizer, info = load_student(model_dir)
    task = task or info["task"]
    spec = get_task(task)
    if info["task"] != spec.name:
        raise NaskdError(f"student {model_dir} was trained for {info['task']}, not {spec.name}")
    tinfo = read_teacher_info(teacher_dir, spec.name)
    M_t = int(tinfo["num_layers"])
    cols = load_split(spec, data_dir, "dev")
    cols = cols.select(subsample(len(cols), max_examples, 0))
    max_length = int(tinfo.get("recipe", {}).get("max_length", 128))
    dev = encode(spec, cols, tokenizer, max_length)
    if len(dev) < 2 * batch_size:
        raise NaskdError(f"the dev split has {len(dev)} examples: too few for two batches of {batch_size}; "
                         "lower --batch-size")
    layers = list(range(M_t + 1)) if layerwise else [M_t - 1]
    reqs = [HiddenRequest(layer, "mean") for layer in layers]
    outputs = TeacherCache(cache_dir).get(teacher_dir, dev, reqs, split="dev", device=dev_)
    s_feats = student_features(model, dev, batch_size, tokenizer.pad_token_id or 0, device=dev_)
    t_pen = np.asarray(outputs.array(HiddenRequest(M_t - 1, "mean").item), dtype=np.float32)
    result = {"task": spec.name, "student": str(model_dir), "teacher": str(teacher_dir),
              "features": "penultimate layer, masked mean over tokens",
              **batch_cka(t_pen, s_feats[-2], batch_size)}
    if layerwise:
        lw = np.zeros((len(s_feats), M_t + 1))
        for a, s in enumerate(s_feats):
            for b in range(M_t + 1):
                t = torch.from_numpy(np.asarray(outputs.array(HiddenRequest(b, "mean").item), dtype=np.float64))
                lw[a, b] = float(cka(torch.from_numpy(s).double(), t))
        result["layerwise"] = {"rows": "student states (0 = embeddings, then cells)",
                               "columns": "teacher hidden states (0 = embeddings)", "matrix": lw.round(6).tolist()}
    return result


def run_analyze_cka(args_model: str, teacher: str, *, out: str | None, overwrite: bool, **kw) -> dict:
    from .students.io import read_student_info
    from .utils.cachedir import default_cache_dir

    task = kw.get("task") or read_student_info(args_model)["task"]
    reads = [args_model, teacher, default_cache_dir(kw.get("cache_dir")), data_root_or_none(kw.get("data_dir"))]
    guard = dict(command="analyze", overwrite=overwrite, resume=False, reads=reads)
    out = Path(out or f"runs/{task}-analyze")
    check_run_dir(out, **guard)               # before the analysis
    result = cka_analysis(args_model, teacher, **kw)
    run_dir = prepare_run_dir(out, **guard)
    write_json(run_dir / "cka.json", result)
    write_json(run_dir / "metrics.json", {k: v for k, v in result.items() if k not in ("matrix", "layerwise")})
    result["_out"] = str(run_dir / "cka.json")
    return result
