"""`naskd teacher`: fine-tune a Hugging Face encoder on a task and write a teacher run directory."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from .. import config as C
from ..assets import asset_path
from ..data.encode import bucket_batches, collate, encode
from ..data.readers import load_split, subsample
from ..data.tasks import REGRESSION, TAGGING, get_task
from ..errors import ConfigError, NaskdError
from ..predict import evaluate_model
from ..train import adamw, fit
from ..utils import dist
from ..utils.io import save_npy, write_json, write_text
from ..utils.rundir import check_run_dir, reads_of, run_settings
from ..utils.runtime import pick_device, seed_everything
from .model import DEFAULT_TEACHER, TeacherModel, load_encoder_and_tokenizer, save_teacher


@dataclass
class TeacherConfig:
    task: str = C.field("sst2", help="task to fine-tune on")
    teacher: str = C.field(DEFAULT_TEACHER, help="base encoder: a local Hugging Face folder, a Hub name, "
                                                  "or the packaged default")
    data_dir: Optional[str] = C.field(None, help="data root (GLUE/CoNLL layout) or a task folder; "
                                                  "default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-teacher)")
    seed: int = C.field(42, help="random seed", range=C.SEED)
    epochs: int = C.field(3, help="training epochs", low=1)
    lr: float = C.field(5e-5, help="peak learning rate (AdamW, linear warm-up and decay)", low=0, low_open=True)
    batch_size: int = C.field(32, help="training batch size", low=1)
    eval_batch_size: int = C.field(128, help="evaluation batch size", low=1)
    max_length: int = C.field(128, help="maximum sub-tokens per example", low=8)
    warmup_ratio: float = C.field(0.06, help="fraction of steps for linear warm-up", low=0, high=1, high_open=True)
    weight_decay: float = C.field(0.01, help="AdamW weight decay (not on biases and LayerNorms)", low=0)
    dropout: float = C.field(0.1, help="dropout before the head", low=0, high=1, high_open=True)
    crf_lr: float = C.field(5e-3, help="tagging: learning rate of the CRF transitions (trained from scratch)",
                            low=0, low_open=True)
    pooling: str = C.field("mean", help="sentence pooling for the head", choices=["mean", "cls"])
    max_train_examples: Optional[int] = C.field(None, help="seeded training subsample, for quick runs", low=1)
    max_eval_examples: Optional[int] = C.field(None, help="seeded dev subsample, for quick runs", low=1)
    bucket: bool = C.field(True, help="length-bucketed batches (off: random batches padded to their max)")
    device: str = C.field("auto", help="auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(500, help="save a resumable checkpoint every N steps (0: epoch ends only)", low=0)
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted", low=1)
    distill_from: Optional[str] = C.field(None, help="self-distillation (born-again networks): train the base "
                                                     "encoder on this teacher run's cached outputs instead of the "
                                                     "gold labels, with --augmented (its synthetic rows labelled by "
                                                     "that teacher) and --kd")
    augmented: Optional[str] = C.field(None, help="with --distill-from: a `naskd augment` run labelled by that "
                                                  "teacher; its synthetic rows join the training rows")
    kd: str = C.field("soft_ce=1", help="with --distill-from: the distillation criteria (see `naskd search "
                                        "--help`)")
    ensemble: Optional[str] = C.field(None, help="instead of fine-tuning: make a teacher of these teacher runs "
                                                 "(comma-separated; same task, tokenizer, depth and width) whose "
                                                 "outputs are the members' means, scored on dev")

    def validate(self) -> None:
        get_task(self.task)    # numbers: their fields' declared ranges, checked by naskd.config.resolve
        from ..distill import parse_kd

        if self.augmented and not self.distill_from:
            raise ConfigError("--augmented is for --distill-from (the synthetic rows carry that teacher's outputs, "
                              "no gold labels)")
        if self.distill_from and self.ensemble:
            raise ConfigError("give --distill-from or --ensemble, not both")
        parse_kd(self.kd)


def recipe_for(task: str) -> tuple[dict, Path | None]:
    spec = get_task(task)
    try:
        path = asset_path("teachers", spec.name)
    except NaskdError:
        return {}, None
    return C.load_yaml(path), path


def resolve_teacher_config(flags: dict, config_file: str | None = None) -> TeacherConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    task = flags.get("task") or file_layer.get("task") or "sst2"
    recipe, rpath = recipe_for(task)
    return C.resolve(TeacherConfig, recipe, file_layer, flags,
                     source_names=[f"recipe {rpath}", f"config {config_file}", "command-line flags"])


def _loss(spec, logits, batch, model):
    labels = batch["labels"]
    if spec.kind == REGRESSION:
        return torch.nn.functional.mse_loss(logits.float(), labels.float())
    if spec.kind == TAGGING:
        return model.crf.nll(logits.float(), labels, batch["word_mask"])
    return torch.nn.functional.cross_entropy(logits, labels)


def finetune_teacher(cfg: TeacherConfig, *, overwrite: bool = False, resume: bool = False, source=None) -> dict:
    """Fine-tune (or, with ``cfg.ensemble``, make an ensemble teacher); return the metrics written to
    ``metrics.json``. ``source`` (:class:`naskd.teachers.selfdistill.SelfDistillation` for
    ``--distill-from``): where the training rows and their targets come from instead of the gold labels."""
    if cfg.ensemble:
        from .ensemble import make_ensemble

        if resume:
            raise NaskdError("an ensemble teacher is made in one go; run it again with --overwrite instead of --resume")
        return make_ensemble([m for m in cfg.ensemble.split(",") if m.strip()], cfg.out or f"runs/{cfg.task}-teacher",
                             data_dir=cfg.data_dir, max_eval_examples=cfg.max_eval_examples, seed=cfg.seed,
                             overwrite=overwrite)
    t_start = time.time()
    spec = get_task(cfg.task)
    # Read and check every input before any model is built.
    train_cols = load_split(spec, cfg.data_dir, "train")
    dev_cols = load_split(spec, cfg.data_dir, "dev")
    out = Path(cfg.out or f"runs/{spec.name}-teacher")
    guard = dict(command="teacher", overwrite=overwrite, resume=resume, reads=reads_of(cfg),
                 settings=run_settings(cfg))
    check_run_dir(out, **guard)
    if source is not None:
        source.check(spec)                    # a teacher of another task, a foreign augmented run: now
    device = pick_device(cfg.device)          # under torchrun this joins the process group
    run_dir = dist.run_directory(out, **guard)
    if dist.is_main() and not resume:         # the record of what ran: never rewritten by a resume
        write_text(run_dir / "config.yaml", yaml.safe_dump(C.to_dict(cfg), sort_keys=False))
    seed_everything(cfg.seed)

    encoder, tokenizer = load_encoder_and_tokenizer(cfg.teacher)
    # subsample before tokenising: a quick run should not pay for the whole split
    train_cols = train_cols.select(subsample(len(train_cols), cfg.max_train_examples, cfg.seed))
    dev_cols = dev_cols.select(subsample(len(dev_cols), cfg.max_eval_examples, cfg.seed))
    pad_id = tokenizer.pad_token_id or 0
    model = TeacherModel(encoder, spec.kind, spec.num_labels, cfg.pooling, cfg.dropout).to(device)
    extra, kd = {}, None
    if source is None:
        train = encode(spec, train_cols, tokenizer, cfg.max_length)
        dev = encode(spec, dev_cols, tokenizer, cfg.max_length)

        def make_batch(rows):
            return collate(train, rows, pad_id=pad_id)

        def target_loss(out, batch, progress):
            return _loss(spec, out["logits"], batch, model), {}
    else:                                     # self-distillation: the teacher's outputs are the targets
        train, dev, make_batch, kd = source.setup(spec, tokenizer, model, device)
        extra = {"kd": kd}

        def target_loss(out, batch, progress):
            return kd(out, batch.get("teacher", {}), batch, progress)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    # the CRF starts from scratch, so it learns at its own (higher) rate, without decay
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("crf.")]
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    if spec.kind == TAGGING:
        groups.append({"params": list(model.crf.parameters()), "weight_decay": 0.0, "lr": cfg.crf_lr})
    if kd is not None and any(p.requires_grad for p in kd.parameters()):   # the criteria's projections
        groups.append({"params": [p for p in kd.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay})
    optimizer = adamw(groups, lr=cfg.lr)
    steps_per_epoch = len(dist.shard(bucket_batches(train.lengths, cfg.batch_size, seed=cfg.seed, epoch=0,
                                                    bucket=cfg.bucket)))
    total = steps_per_epoch * cfg.epochs
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    lengths = train.lengths
    dist.say(f"[teacher] {spec.name}: {len(train)} train / {len(dev)} dev examples, base {cfg.teacher}, "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {cfg.epochs} epochs of "
             f"{steps_per_epoch} steps on {device}"
             f"{f' x {dist.world_size()} processes' if dist.world_size() > 1 else ''}; run directory {run_dir}",
             flush=True)

    def loss_fn(batch, progress):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**batch, output_hidden_states=bool(kd is not None and kd.teacher_requests()))
        if kd is not None and out.hidden_states is not None:      # criteria on states read the student's
            out.states, out.mask = list(out.hidden_states), batch["attention_mask"].bool()
        return target_loss(out, batch, progress)

    def evaluate():
        metrics, evaluate.last = evaluate_model(model, spec, dev, batch_size=cfg.eval_batch_size, device=device,
                                                pad_id=pad_id)
        return metrics

    def on_best(metrics):
        save_teacher(run_dir, model, tokenizer, spec, cfg.teacher,
                     extra={"recipe": C.to_dict(cfg), "dev": metrics,
                            **({"distilled_from": str(cfg.distill_from)} if source is not None else {})})
        if spec.kind != TAGGING:
            save_npy(run_dir / "dev_logits.npy", np.asarray(evaluate.last, dtype=np.float32))

    result = fit(model=model, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
                 batches_for_epoch=lambda e: bucket_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=e,
                                                            bucket=cfg.bucket),
                 make_batch=make_batch, loss_fn=loss_fn,
                 evaluate=evaluate, main_metric=spec.main_metric, run_dir=run_dir, device=device,
                 on_best=on_best, resume=resume, stop_after_steps=cfg.stop_after_steps,
                 checkpoint_every=cfg.checkpoint_every, desc=f"teacher {spec.name}", extra=extra)
    metrics = {
        "command": "teacher", "task": spec.name, "base": cfg.teacher, "status":
            "stopped" if result.stopped else "finished",
        "dev": result.best_metrics, "best_epoch": result.state.best_epoch + 1,
        "epochs_done": result.state.epoch, "steps": result.state.global_step,
        "train_examples": len(train), "rows_trained_per_epoch": result.state.rows_per_epoch,
        "dev_examples": len(dev),
        "train_seconds": round(result.state.train_seconds, 1),
        "wall_seconds_this_process": round(time.time() - t_start, 1),
        "history": result.state.history, "device": str(device), "processes": dist.world_size(),
    }
    if dist.is_main():
        write_json(run_dir / "metrics.json", metrics)
    return metrics
