"""What the distillation criteria need to know of a student and its teacher run: :class:`KDContext` built
from the teacher's ``teacher.json`` (and, for taggers, its CRF)."""
from __future__ import annotations

from pathlib import Path

from ..data.tasks import TAGGING, TaskSpec
from .criteria import KDContext


def teacher_crf(teacher_dir) -> dict | None:
    """The CRF parameters of a tagging teacher run ({start, end, trans}), read from its weights."""
    from safetensors import safe_open

    with safe_open(str(Path(teacher_dir) / "model.safetensors"), framework="pt") as f:
        if "crf.trans" not in set(f.keys()):
            return None
        return {k: f.get_tensor(f"crf.{k}") for k in ("start", "end", "trans")}


def kd_context(spec: TaskSpec, info: dict, layers: int, width: int, teacher_dir=None, *, temperature: float = 1.0,
               pkd_pairs=(), fsd_memory: int | None = None, seed: int = 0) -> KDContext:
    """What the criteria need to know of a student (depth, width) and its teacher (``teacher.json``)."""
    crf = teacher_crf(teacher_dir) if teacher_dir is not None and spec.kind == TAGGING else None
    return KDContext(task=spec, student_layers=layers, student_width=width,
                     teacher_layers=int(info["num_layers"]), teacher_width=int(info["hidden_size"]),
                     temperature=temperature, pkd_pairs=list(pkd_pairs), fsd_memory=fsd_memory, seed=seed,
                     teacher_crf=crf)
