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

from . import config as C
from .data.encode import Encoded, collate, encode
from .data.readers import load_split, subsample
from .augment.data import with_augmented
from .data.tasks import TAGGING, TaskSpec, get_task
from .errors import NaskdError
from .teachers.cache import HiddenRequest, TeacherCache, TeacherOutputs
from .teachers.model import read_teacher_info


# Default criteria: NAS-KD's a*L_soft + (1-a)*L_hard + b*L_intermediate for sentence tasks; sub-structure KD
# for CRF taggers (its own schedule mixes in the CRF likelihood).
DEFAULT_KD = "soft_ce=0.5,hard_ce=0.5,pkd=1"
DEFAULT_TAGGING_KD = "substructure"


def data_seed_field():
    """The ``data_seed`` field of a distillation run's config (search and retrain share it)."""
    return C.field(0, help="seed of the training subsample; fixed by default so runs with different --seed train "
                           "on the same examples", range=C.SEED)


def augmented_field():
    """The ``augmented`` field of a distillation run's config (search and retrain)."""
    return C.field(None, help="a `naskd augment` run: train on the teacher's outputs for the original plus "
                              "synthetic examples (hard-label terms skip synthetic ones)")


def augment_field():
    """The ``augment`` field of a distillation run's config (search and retrain)."""
    return C.field(False, help="build the default augmentation of the training rows first (or reuse it)")


def default_kd(task: str) -> str:
    return DEFAULT_TAGGING_KD if get_task(task).kind == TAGGING else DEFAULT_KD


def start_distillation_run(command: str, cfg, spec: TaskSpec, *, overwrite: bool, resume: bool):
    """What `naskd search` and `naskd retrain` do first: the run directory (``cfg.out``, default
    ``runs/<task>-<command>``) checked before any work (naskd.utils.rundir: nothing overwritten or mixed
    unasked), then the teacher run resolved (a default one fine-tuned when missing) and read. Returns
    (out, guard: the check's keywords for creating the directory later, teacher_dir, teacher info)."""
    from .utils.rundir import check_run_dir, reads_of, run_settings

    out = Path(cfg.out or f"runs/{spec.name}-{command}")
    guard = dict(command=command, overwrite=overwrite, resume=resume, reads=reads_of(cfg), settings=run_settings(cfg))
    check_run_dir(out, **guard)               # before any work (a default teacher may be fine-tuned next)
    teacher_dir = resolve_teacher_run(spec.name, cfg.teacher, cfg.data_dir)
    return out, guard, teacher_dir, read_teacher_info(teacher_dir, spec.name)


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
        train, outputs = with_augmented(spec, augmented, teacher_dir, train, outputs, tokenizer, max_length,
                                         requests, cache_dir, device)
    return DistillData(spec, Path(teacher_dir), info, tokenizer, train, dev, outputs, list(requests),
                       tokenizer.pad_token_id or 0)
