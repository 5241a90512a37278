"""Shared preparation for every command that distils: teacher run, data, cached teacher outputs.

Data flows one way: data -> teacher (cache) -> search / retrain. The teacher model itself is loaded only
when the cache lacks an item.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from .data.encode import Encoded, collate, encode
from .data.readers import load_split, subsample
from .data.tasks import TAGGING, TaskSpec, get_task
from .distill import KDContext
from .errors import NaskdError
from .teachers.cache import HiddenRequest, TeacherCache, TeacherOutputs
from .teachers.model import read_teacher_info


# Default criteria: NAS-KD's a*L_soft + (1-a)*L_hard + b*L_intermediate for sentence tasks; sub-structure KD
# for CRF taggers (its own schedule mixes in the CRF likelihood).
DEFAULT_KD = "soft_ce=0.5,hard_ce=0.5,pkd=1"
DEFAULT_TAGGING_KD = "substructure"


def default_kd(task: str) -> str:
    return DEFAULT_TAGGING_KD if get_task(task).kind == TAGGING else DEFAULT_KD


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


def resolve_teacher_run(task: str, teacher: str | None, data_dir, *, runs_root: str = "runs") -> Path:
    """``--teacher RUN_DIR`` if given; else ``runs/<task>-teacher``; else fine-tune the default teacher
    first (saying so), so a fresh machine needs one command."""
    spec = get_task(task)
    if teacher:
        read_teacher_info(teacher, spec.name)
        return Path(teacher)
    default = Path(runs_root) / f"{spec.name}-teacher"
    if (default / "teacher.json").is_file():
        read_teacher_info(default, spec.name)
        print(f"[naskd] using the teacher run {default}", flush=True)
        return default
    if default.exists() and any(default.iterdir()):
        raise NaskdError(f"{default} holds an unfinished teacher run; finish it with `naskd teacher --task "
                         f"{spec.name} --resume`, or name another with --teacher RUN_DIR")
    from .teachers.finetune import finetune_teacher, resolve_teacher_config

    print(f"[naskd] no teacher run for {spec.name} under {runs_root}/ and no --teacher given: fine-tuning the "
          f"default teacher first (recipe teachers/{spec.name}.yaml, into {default}; the progress bar shows "
          f"its ETA; later runs reuse it)", flush=True)
    cfg = resolve_teacher_config({"task": spec.name, "data_dir": data_dir, "out": str(default)})
    finetune_teacher(cfg)
    return default


@dataclass
class DistillData:
    spec: TaskSpec
    teacher_dir: Path
    teacher_info: dict
    tokenizer: object
    train: Encoded
    dev: Encoded
    train_outputs: TeacherOutputs | None
    requests: list
    pad_id: int

    def make_batch(self, rows, *, with_teacher: bool = True) -> dict:
        batch = collate(self.train, rows, pad_id=self.pad_id)
        if with_teacher and self.train_outputs is not None:
            batch["teacher"] = teacher_batch(self.train_outputs, rows, self.requests)
        return batch


def teacher_batch(outputs: TeacherOutputs, rows, requests: list[HiddenRequest]) -> dict:
    rows = np.asarray(rows)
    return {"logits": outputs.logits_for(rows), "hidden": {r: outputs.hidden_for(r, rows) for r in requests}}


def resolve_augmented(cfg, spec, teacher_dir: Path) -> str | None:
    """``--augmented RUN_DIR`` as given; with ``--augment``, the default augmentation of the run's training
    rows, built (or resumed, or reused) under runs/<task>-augment[-<subsample>-<data seed>]."""
    if cfg.augmented:
        return cfg.augmented
    if not cfg.augment:
        return None
    from .augment.run import resolve_augment_config, run_augment

    name = f"runs/{spec.name}-augment" + (f"-{cfg.max_train_examples}-{cfg.data_seed}" if cfg.max_train_examples else "")
    if (Path(name) / "metrics.json").is_file() and '"finished"' in (Path(name) / "metrics.json").read_text():
        return name
    acfg = resolve_augment_config({"task": spec.name, "teacher": str(teacher_dir), "data_dir": cfg.data_dir,
                                   "cache_dir": cfg.cache_dir, "out": name, "max_train_examples": cfg.max_train_examples,
                                   "data_seed": cfg.data_seed, "kd": cfg.kd})
    print(f"[naskd] --augment: building the default augmentation into {name}", flush=True)
    run_augment(acfg, resume=Path(name).is_dir() and any(Path(name).iterdir()))
    return name


def _with_augmented(spec, run, teacher_dir, train: Encoded, outputs, tokenizer, max_length, requests, cache_dir,
                    device):
    from .augment.run import encode_part, part_paths, read_part
    from .data.encode import concat_encoded
    from .teachers.cache import ConcatOutputs

    run = Path(run)
    meta = run / "data" / "generated.json"
    if not meta.is_file():
        raise NaskdError(f"{run} is not a finished `naskd augment` run (no data/generated.json)")
    import yaml

    used = yaml.safe_load((run / "config.yaml").read_text()).get("teacher")
    if used and Path(used).resolve() != Path(teacher_dir).resolve():
        raise NaskdError(f"{run} was labelled by the teacher {used}, not {teacher_dir}; pass that --teacher or "
                         "augment again")
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


def batch_to(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif k == "teacher":
            out[k] = {"logits": v["logits"].to(device),
                      "hidden": {r: h.to(device) for r, h in v["hidden"].items()}}
        else:
            out[k] = v
    return out


def prepare(task: str, teacher_dir: Path, *, data_dir, max_train_examples: int | None,
            max_eval_examples: int | None, seed: int, requests: list[HiddenRequest], cache_dir=None,
            device="cpu", need_teacher: bool = True, max_length: int | None = None,
            augmented: str | None = None, splits: tuple | None = None) -> DistillData:
    """Tokenised train/dev splits and the teacher's cached outputs for the training split. With
    ``augmented`` (a `naskd augment` run), the training split also holds the synthetic examples made
    from the kept training rows, without gold labels (``has_label`` False). ``splits``: the (train, dev)
    columns when the caller has read them already (:func:`naskd.data.readers.load_split`)."""
    spec = get_task(task)
    info = read_teacher_info(teacher_dir, spec.name)
    if max_length is None:
        max_length = int(info.get("recipe", {}).get("max_length", 128))
    train_cols, dev_cols = splits or (load_split(spec, data_dir, "train"), load_split(spec, data_dir, "dev"))
    train_cols = train_cols.select(subsample(len(train_cols), max_train_examples, seed))
    dev_cols = dev_cols.select(subsample(len(dev_cols), max_eval_examples, seed))
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    train = encode(spec, train_cols, tokenizer, max_length)
    dev = encode(spec, dev_cols, tokenizer, max_length)
    outputs = None
    if need_teacher:
        outputs = TeacherCache(cache_dir).get(teacher_dir, train, requests, device=device, split="train")
    if augmented:
        train, outputs = _with_augmented(spec, augmented, teacher_dir, train, outputs, tokenizer, max_length,
                                         requests, cache_dir, device)
    return DistillData(spec, Path(teacher_dir), info, tokenizer, train, dev, outputs, list(requests),
                       tokenizer.pad_token_id or 0)
