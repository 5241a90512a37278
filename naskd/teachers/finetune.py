"""`naskd teacher`: fine-tune a Hugging Face encoder on a task and write a teacher run directory."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from .. import config as C
from ..assets import asset_path
from ..data.encode import bucket_batches, collate, encode, epoch_rows
from ..data.readers import load_split, subsample
from ..data.selection import LEAK_WARNING, carve_selection, inside_fraction, row_texts
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
    device: str = C.field("auto", help="auto, cpu or cuda (training steps under bf16 autocast on cuda)",
                         choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(500, help="save a resumable checkpoint every N steps (0: epoch ends only)", low=0)
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted", low=1)
    selection_examples: Optional[int] = C.field(None, help="rows carved (seeded by --seed) from the training "
                                                           "split, never trained on, that choose the best epoch "
                                                           "instead of dev; dev is then scored once, on the kept "
                                                           "weights (what `naskd tune --stage teacher` chooses on)",
                                                low=1)
    selection_from: str = C.field("rows", help="how --selection-examples are carved: rows (drawn at random from "
                                              "the training rows, after --max-train-examples) or sentences "
                                              "(drawn from the whole split among the rows no other row contains, "
                                              "every row inside them kept out of training: SST-2's training "
                                              "phrases would otherwise leak into the selection split)",
                                  choices=["rows", "sentences"])
    evals_per_epoch: int = C.field(1, help="score the split that chooses this many times per pass over the "
                                           "training rows (each time on a slice of a seeded pass; Optuna prunes "
                                           "on these scores)", low=1)
    layer_lr_decay: float = C.field(1.0, help="layer-wise learning-rate decay: encoder layer i of L learns at "
                                              "lr x decay^(L-1-i), the embeddings at lr x decay^L, the head at lr "
                                              "(1: one rate)", low=0, high=1, low_open=True)
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


def _parameter_groups(model, cfg, spec) -> list[dict]:
    """AdamW groups: weight decay off for biases and norms; with ``cfg.layer_lr_decay`` d < 1 each encoder layer
    i of L at lr x d^(L-1-i) and the embeddings at lr x d^L (layer-wise decay, as in ELECTRA and ULMFiT's
    discriminative fine-tuning); the CRF (tagging) from scratch at its own rate."""
    import re

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    L = model.num_layers

    def scale(name: str) -> float:
        if cfg.layer_lr_decay >= 1.0 or not name.startswith("encoder."):
            return 1.0
        m = re.search(r"\.layers?\.(\d+)\.", name)
        if m:
            return cfg.layer_lr_decay ** (L - 1 - int(m.group(1)))
        return cfg.layer_lr_decay ** L if "embeddings" in name else 1.0

    groups: dict = {}
    for n, p in model.named_parameters():
        if n.startswith("crf."):
            continue
        key = (scale(n), n.endswith(no_decay))
        groups.setdefault(key, []).append(p)
    out = [{"params": ps, "lr": cfg.lr * k[0], "weight_decay": 0.0 if k[1] else cfg.weight_decay}
           for k, ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))]
    if spec.kind == TAGGING:                  # the CRF starts from scratch: its own (higher) rate, no decay
        out.append({"params": list(model.crf.parameters()), "weight_decay": 0.0, "lr": cfg.crf_lr})
    return out


def finetune_teacher(cfg: TeacherConfig, *, overwrite: bool = False, resume: bool = False, source=None,
                     on_epoch=None) -> dict:
    """Fine-tune (or, with ``cfg.ensemble``, make an ensemble teacher); return the metrics written to
    ``metrics.json``. ``source`` (:class:`naskd.teachers.selfdistill.SelfDistillation` for
    ``--distill-from``): where the training rows and their targets come from instead of the gold labels.
    ``on_epoch(epoch, metrics)`` is called after each scoring (of the selection split, or dev)."""
    if cfg.ensemble:
        from .ensemble import make_ensemble

        if resume:
            raise NaskdError("an ensemble teacher is made in one go; run it again with --overwrite instead of --resume")
        return make_ensemble([m for m in cfg.ensemble.split(",") if m.strip()], cfg.out or f"runs/{cfg.task}-teacher",
                             task=cfg.task, data_dir=cfg.data_dir, max_eval_examples=cfg.max_eval_examples, seed=cfg.seed,
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
    if cfg.selection_from != "rows" and not cfg.selection_examples:
        raise ConfigError(f"--selection-from {cfg.selection_from} says how --selection-examples are carved; give "
                          "--selection-examples N (without it, dev chooses the best epoch)")
    if cfg.selection_examples:
        n_train = min(len(train_cols), cfg.max_train_examples or len(train_cols))
        if source is not None:
            raise ConfigError("--selection-examples is for fine-tuning on gold labels; a self-distilled teacher "
                              "chooses its epoch on dev")
        if cfg.selection_from == "rows" and cfg.selection_examples > n_train // 2:
            raise ConfigError(f"--selection-examples {cfg.selection_examples} would leave fewer rows to train on "
                              f"than to select on ({n_train} training rows); lower it to at most {n_train // 2}")
    selection_cols = None
    if cfg.selection_examples and cfg.selection_from == "sentences":   # whole rows, from the whole split
        carve = carve_selection(row_texts(train_cols.to_dict()), cfg.selection_examples,
                                np.random.default_rng([cfg.seed, 5]), "sentences")
        selection_cols, train_cols = train_cols.select(carve.selection), train_cols.select(carve.train)
        dist.say(f"[teacher] selection split: {carve.describe()}", flush=True)
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
    selection = None
    if source is None:
        train = encode(spec, train_cols, tokenizer, cfg.max_length)
        dev = encode(spec, dev_cols, tokenizer, cfg.max_length)
        if selection_cols is not None:
            selection = encode(spec, selection_cols, tokenizer, cfg.max_length)
        elif cfg.selection_examples:          # carved from train, never trained on; chooses instead of dev
            perm = np.random.default_rng([cfg.seed, 5]).permutation(len(train))
            carved = np.sort(perm[:cfg.selection_examples])
            selection, train = train.select(carved), train.select(np.sort(perm[cfg.selection_examples:]))
            held = inside_fraction(row_texts(train_cols.to_dict()), carved)
            if held > LEAK_WARNING:
                dist.say(f"[teacher] warning: {held:.0%} of the selection rows lie inside longer training rows "
                         f"(phrases of one sentence, as in SST-2): the selection split overstates accuracy and "
                         f"may rank recipes unlike dev; --selection-from sentences carves whole rows instead",
                         file=sys.stderr, flush=True)

        def make_batch(rows):
            return collate(train, rows, pad_id=pad_id)

        def target_loss(out, batch, progress):
            return _loss(spec, out["logits"], batch, model), {}
    else:                                     # self-distillation: the teacher's outputs are the targets
        train, dev, make_batch, kd = source.setup(spec, tokenizer, model, device)
        extra = {"kd": kd}

        def target_loss(out, batch, progress):
            return kd(out, batch.get("teacher", {}), batch, progress)
    groups = _parameter_groups(model, cfg, spec)
    if kd is not None and any(p.requires_grad for p in kd.parameters()):   # the criteria's projections
        groups.append({"params": [p for p in kd.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay})
    optimizer = adamw(groups, lr=cfg.lr)
    lengths = train.lengths
    rounds = cfg.epochs * cfg.evals_per_epoch          # the loop's epochs: slices of passes between scorings
    per_round = -(-len(train) // cfg.evals_per_epoch)

    def batches_for_epoch(e):
        if cfg.evals_per_epoch == 1:
            return bucket_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=e, bucket=cfg.bucket)
        rows = epoch_rows(len(train), per_round, seed=cfg.seed, epoch=e)
        return [rows[b] for b in bucket_batches(lengths[rows], cfg.batch_size, seed=cfg.seed, epoch=e,
                                                bucket=cfg.bucket)]

    steps_per_epoch = len(dist.shard(batches_for_epoch(0)))
    total = steps_per_epoch * rounds
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    chooser = "dev" if selection is None else f"a {len(selection)}-row selection split carved from train"
    dist.say(f"[teacher] {spec.name}: {len(train)} train / {len(dev)} dev examples, base {cfg.teacher}, "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {cfg.epochs} epochs"
             f"{f' scored {cfg.evals_per_epoch} times each' if cfg.evals_per_epoch > 1 else ''} ({total} steps) on "
             f"{device}{f' x {dist.world_size()} processes' if dist.world_size() > 1 else ''}; the best epoch "
             f"chosen on {chooser}"
             f"{f'; layer-wise lr decay {cfg.layer_lr_decay}' if cfg.layer_lr_decay < 1 else ''}; run directory "
             f"{run_dir}", flush=True)

    def loss_fn(batch, progress):
        out = model(**batch, output_hidden_states=bool(kd is not None and kd.teacher_requests()))   # fit: bf16 on CUDA
        if kd is not None and out.hidden_states is not None:      # criteria on states read the student's
            out.states, out.mask = list(out.hidden_states), batch["attention_mask"].bool()
        return target_loss(out, batch, progress)

    def evaluate():
        metrics, evaluate.last = evaluate_model(model, spec, dev if selection is None else selection,
                                                batch_size=cfg.eval_batch_size, device=device, pad_id=pad_id)
        return metrics

    def record(metrics, logits, **more):
        save_teacher(run_dir, model, tokenizer, spec, cfg.teacher,
                     extra={"recipe": C.to_dict(cfg), "dev": metrics, **more,
                            **({"distilled_from": str(cfg.distill_from)} if source is not None else {})})
        if spec.kind != TAGGING:
            save_npy(run_dir / "dev_logits.npy", np.asarray(logits, dtype=np.float32))

    def on_best(metrics):
        if selection is None:
            record(metrics, evaluate.last)
        else:                                 # dev is scored once, on the kept weights, after training
            save_teacher(run_dir, model, tokenizer, spec, cfg.teacher,
                         extra={"recipe": C.to_dict(cfg), "selection": metrics, "dev": None})

    result = fit(model=model, optimizer=optimizer, scheduler=scheduler, epochs=rounds,
                 batches_for_epoch=batches_for_epoch, make_batch=make_batch, loss_fn=loss_fn,
                 evaluate=evaluate, main_metric=spec.main_metric, run_dir=run_dir, device=device,
                 on_best=on_best, on_epoch=on_epoch, resume=resume, stop_after_steps=cfg.stop_after_steps,
                 checkpoint_every=cfg.checkpoint_every, desc=f"teacher {spec.name}", extra=extra)
    dev_metrics, chosen = result.best_metrics, None
    if selection is not None and not result.stopped and dist.is_main():
        from .model import load_teacher

        kept, _, _ = load_teacher(run_dir)
        dev_metrics, logits = evaluate_model(kept.to(device), spec, dev, batch_size=cfg.eval_batch_size,
                                             device=device, pad_id=pad_id)
        chosen = result.best_metrics
        model.load_state_dict(kept.state_dict())
        record(dev_metrics, logits, selection=chosen)
    metrics = {
        "command": "teacher", "task": spec.name, "base": cfg.teacher, "status":
            "stopped" if result.stopped else "finished",
        "dev": dev_metrics, "selection": chosen, "best_epoch": result.state.best_epoch + 1,
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
