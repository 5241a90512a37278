"""Training on a `naskd augment` run: which augmented set a command uses (``--augmented`` / ``--augment``), and
its synthetic rows joined to the original ones with their cached teacher outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.encode import Encoded
from ..errors import NaskdError


def resolve_augmented(cfg, spec, teacher_dir: Path) -> str | None:
    """``--augmented RUN_DIR`` as given; with ``--augment``, the default augmentation of the run's training
    rows, built (or resumed, or reused) under runs/<task>-augment[-<subsample>-<data seed>]."""
    if cfg.augmented:
        return cfg.augmented
    if not cfg.augment:
        return None
    from .run import resolve_augment_config, run_augment

    name = f"runs/{spec.name}-augment" + (f"-{cfg.max_train_examples}-{cfg.data_seed}" if cfg.max_train_examples else "")
    if (Path(name) / "metrics.json").is_file() and '"finished"' in (Path(name) / "metrics.json").read_text():
        return name
    acfg = resolve_augment_config({"task": spec.name, "teacher": str(teacher_dir), "data_dir": cfg.data_dir,
                                   "cache_dir": cfg.cache_dir, "out": name, "max_train_examples": cfg.max_train_examples,
                                   "data_seed": cfg.data_seed, "kd": cfg.kd})
    print(f"[naskd] --augment: building the default augmentation into {name}", flush=True)
    run_augment(acfg, resume=Path(name).is_dir() and any(Path(name).iterdir()))
    return name


def check_labelled_by(run, teacher_dir) -> None:
    """NaskdError (one line) unless ``run`` is a finished `naskd augment` run labelled by ``teacher_dir``."""
    import yaml

    run = Path(run)
    if not (run / "data" / "generated.json").is_file():
        raise NaskdError(f"{run} is not a finished `naskd augment` run (no data/generated.json)")
    used = yaml.safe_load((run / "config.yaml").read_text()).get("teacher")
    if used and Path(used).resolve() != Path(teacher_dir).resolve():
        raise NaskdError(f"{run} was labelled by the teacher {used}, not {teacher_dir}; pass that --teacher or "
                         "augment again")


def with_augmented(spec, run, teacher_dir, train: Encoded, outputs, tokenizer, max_length, requests, cache_dir,
                    device):
    from ..data.encode import concat_encoded
    from ..teachers.cache import ConcatOutputs, TeacherCache
    from .run import encode_part, part_paths, read_part

    run = Path(run)
    check_labelled_by(run, teacher_dir)
    if outputs is None:          # criteria without a teacher: still no gold labels for synthetic rows
        raise NaskdError("--augmented needs a distillation criterion that uses the teacher (synthetic examples "
                         "have no gold label)")
    keep = set(int(i) for i in train.idx)
    cache = TeacherCache(cache_dir)
    parts, pieces = [(outputs, np.arange(len(train)))], [train]
    for p in part_paths(run):
        data = encode_part(spec, read_part(p), tokenizer, max_length)
        rows = np.nonzero(np.isin(data.idx, list(keep)))[0]
        if not len(rows):
            continue
        out = cache.get(teacher_dir, data, requests, device=device, split=f"augmented {p.name}")
        parts.append((out, rows))
        pieces.append(data.select(rows))
    merged = concat_encoded(pieces)
    print(f"[naskd] training on {len(train):,} original + {len(merged) - len(train):,} synthetic examples from "
          f"{run} (synthetic ones carry teacher outputs only)", flush=True)
    return merged, ConcatOutputs(parts)
