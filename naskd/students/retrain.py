"""`naskd retrain`: train the fixed student of a genotype from scratch, distilling from cached teacher
outputs; keep the best dev epoch; write ``<run>/student/``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from .. import config as C
from ..data.encode import bucket_batches
from ..data.tasks import TAGGING, get_task
from ..distill import DistillationLoss, parse_kd, parse_pairs
from ..errors import ConfigError, NaskdError
from ..evaluation import predictions_from_logits, score
from ..genotype import Genotype
from ..network import teacher_embedding_tables
from ..pipeline import batch_to, prepare, resolve_teacher_run
from ..predict import predict_logits
from ..search.run import DEFAULT_KD, kd_context
from ..teachers.model import read_teacher_info
from ..train import fit
from ..utils.io import prepare_run_dir, write_json, write_text
from ..utils.runtime import pick_device, seed_everything
from .fixed import FixedStudent
from .io import save_student


@dataclass
class RetrainConfig:
    task: str = C.field("sst2", help="task")
    genotype: Optional[str] = C.field(None, help="genotype.json from `naskd search` (required)")
    teacher: Optional[str] = C.field(None, help="teacher run directory (default runs/<task>-teacher)")
    data_dir: Optional[str] = C.field(None, help="data root or task folder; default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-retrain)")
    cache_dir: Optional[str] = C.field(None, help="teacher output cache")
    width: Optional[int] = C.field(None, help="student width (default: the genotype's)")
    kd: str = C.field(DEFAULT_KD, help="distillation criteria with weights (see `naskd search --help`)")
    temperature: float = C.field(1.0, help="soft_ce temperature")
    pkd_pairs: Optional[str] = C.field(None, help="explicit student-cell:teacher-layer pairs for pkd")
    fsd_memory: Optional[int] = C.field(None, help="fsd_global memory size")
    epochs: int = C.field(10, help="training epochs")
    batch_size: int = C.field(32, help="batch size")
    lr: float = C.field(1e-3, help="peak learning rate (AdamW, linear warm-up and decay)")
    weight_decay: float = C.field(1e-2, help="weight decay")
    warmup_ratio: float = C.field(0.05, help="warm-up fraction")
    dropout: float = C.field(0.1, help="dropout")
    max_train_examples: Optional[int] = C.field(None, help="seeded training subsample")
    max_eval_examples: Optional[int] = C.field(None, help="seeded dev subsample")
    max_length: Optional[int] = C.field(None, help="maximum sub-tokens (default: the teacher's recipe)")
    seed: int = C.field(0, help="random seed")
    data_seed: int = C.field(0, help="seed of the training subsample; fixed by default so runs with different "
                                     "--seed train on the same examples")
    device: str = C.field("auto", help="auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(500, help="checkpoint every N steps (and at each epoch end)")
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted")

    def validate(self) -> None:
        spec = get_task(self.task)
        if spec.kind == TAGGING:
            raise ConfigError(f"retraining tagging students ({spec.name}) arrives with sequence labelling")
        if not self.genotype:
            raise ConfigError("--genotype FILE is required (the genotype.json of a `naskd search` run)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"--width must be positive, got {self.width}")
        parse_kd(self.kd)

    @property
    def pairs(self) -> list:
        return parse_pairs(self.pkd_pairs)


def resolve_retrain_config(flags: dict, config_file: str | None = None) -> RetrainConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    return C.resolve(RetrainConfig, file_layer, flags, source_names=[f"config {config_file}", "command-line flags"])


def retrain(cfg: RetrainConfig, *, overwrite: bool = False, resume: bool = False) -> dict:
    t_start = time.time()
    seed_everything(cfg.seed)
    spec = get_task(cfg.task)
    genotype = Genotype.load(cfg.genotype)
    width = cfg.width or genotype.width
    genotype.check_width(width, str(cfg.genotype))
    out = Path(cfg.out or f"runs/{spec.name}-retrain")
    if not resume and out.exists() and any(out.iterdir()) and not overwrite:
        prepare_run_dir(out, overwrite=False, resume=False)
    teacher_dir = resolve_teacher_run(spec.name, cfg.teacher, cfg.data_dir)
    info = read_teacher_info(teacher_dir, spec.name)
    ctx = kd_context(cfg, spec, info, genotype.layers, width)
    kd = DistillationLoss(cfg.kd, ctx)
    run_dir = prepare_run_dir(out, overwrite=overwrite, resume=resume)
    write_text(run_dir / "config.yaml", yaml.safe_dump({**C.to_dict(cfg), "teacher": str(teacher_dir)},
                                                       sort_keys=False))
    device = pick_device(cfg.device)
    data = prepare(spec.name, teacher_dir, data_dir=cfg.data_dir, max_train_examples=cfg.max_train_examples,
                   max_eval_examples=cfg.max_eval_examples, seed=cfg.data_seed, requests=kd.teacher_requests(),
                   cache_dir=cfg.cache_dir, device=device, need_teacher=kd.needs_teacher, max_length=cfg.max_length)
    kd.setup(data.train_outputs, data.train)
    seed_everything(cfg.seed)
    model = FixedStudent(genotype, kind=spec.kind, num_labels=spec.num_labels, vocab_size=len(data.tokenizer),
                         width=width, dropout=cfg.dropout)
    emb_note = model.embeddings.init_from_teacher(teacher_embedding_tables(teacher_dir))
    model.to(device)
    kd.to(device)
    params = list(model.parameters()) + [p for p in kd.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = data.train.lengths
    steps = len(bucket_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=0)) * cfg.epochs
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    n_params = sum(p.numel() for p in model.parameters())
    n_emb = sum(p.numel() for p in model.embeddings.parameters())
    print(f"[retrain] {spec.name}: {len(data.train)} train / {len(data.dev)} dev; genotype {genotype.describe()}; "
          f"width {width}; {n_params / 1e6:.2f}M parameters ({(n_params - n_emb) / 1e6:.2f}M without embeddings); "
          f"kd {cfg.kd}; {emb_note}; run directory {run_dir}", flush=True)

    def loss_fn(batch):
        out = model(**batch)
        return kd(out, batch.get("teacher", {}), batch)

    def evaluate():
        model.eval()
        logits = predict_logits(lambda b: model(**b)["logits"], data.dev, batch_size=128, device=device,
                                pad_id=data.pad_id)
        model.train()
        evaluate.last = logits
        return score(spec, data.dev.labels, predictions_from_logits(spec, logits))

    def on_best(metrics):
        save_student(run_dir / "student", model, data.tokenizer, task=spec.name,
                     extra={"teacher": str(teacher_dir), "kd": cfg.kd, "dev": metrics, "seed": cfg.seed})
        np.save(run_dir / "dev_logits.npy", np.asarray(evaluate.last, dtype=np.float32))

    result = fit(model=model, optimizer=opt, scheduler=sched, epochs=cfg.epochs,
                 batches_for_epoch=lambda e: bucket_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=e),
                 make_batch=lambda rows: batch_to(data.make_batch(rows), "cpu"), loss_fn=loss_fn,
                 evaluate=evaluate, main_metric=spec.main_metric, run_dir=run_dir, device=device,
                 on_best=on_best, resume=resume, stop_after_steps=cfg.stop_after_steps,
                 checkpoint_every=cfg.checkpoint_every, extra={"kd": kd}, desc=f"retrain {spec.name}")
    metrics = {"command": "retrain", "task": spec.name, "status": "stopped" if result.stopped else "finished",
               "genotype": genotype.describe(), "kd": cfg.kd, "dev": result.best_metrics,
               "best_epoch": result.state.best_epoch + 1, "epochs_done": result.state.epoch,
               "train_examples": len(data.train), "parameters": n_params,
               "parameters_without_embeddings": n_params - n_emb,
               "train_seconds": round(result.state.train_seconds, 1),
               "wall_seconds_this_process": round(time.time() - t_start, 1), "history": result.state.history}
    write_json(run_dir / "metrics.json", metrics)
    return metrics
