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
from ..data.encode import bucket_batches, epoch_rows
from ..data.readers import load_split
from ..data.tasks import TAGGING, get_task
from ..distill import DistillationLoss, parse_kd, parse_pairs
from ..errors import ConfigError, NaskdError
from ..genotype import sample_genotype
from ..space.oneshot import load_genotype
from ..network import count_parameters
from ..augment.data import resolve_augmented
from ..distill.context import kd_context
from .. import pipeline as P
from ..pipeline import DEFAULT_KD, DEFAULT_TAGGING_KD, batch_to, default_kd, prepare, start_distillation_run
from ..predict import evaluate_model
from ..space.spec import load_space
from ..train import adamw, fit
from ..utils import dist
from ..utils.io import save_npy, write_json, write_text
from ..utils.runtime import pick_device, seed_everything
from .fixed import FixedStudent
from .io import save_student
from .kinds import STUDENT_KINDS, genotype_kind, retrain_kind, truncate_k


# how `--student` obtains a student: from a genotype (a search's, or a sampled cell one), or a kind by name
STUDENTS = ("genotype", "random", "bilstm_soft", "truncated_teacher")


@dataclass
class RetrainConfig:
    task: str = C.field("sst2", help="task")
    student: str = C.field("genotype", help="genotype: the student of --genotype; bilstm_soft: Tang et al. "
                                            "2019's distilled BiLSTM (its recipe, unless flags say otherwise: "
                                            "--kd logit_mse --optimizer adadelta --lr 1.0 --batch-size 50); "
                                            "truncated_teacher: the teacher's first --truncate-k layers (lr 5e-5); "
                                            "random: a genotype sampled from --space",
                           choices=list(STUDENTS))
    genotype: Optional[str] = C.field(None, help="genotype.json from `naskd search` (for --student genotype)")
    truncate_k: Optional[int] = C.field(None, help="truncated_teacher: layers kept (default ceil(M_t/2))", low=1)
    bilstm_hidden: int = C.field(150, help="bilstm_soft: LSTM units per direction (paper: 150 or 300)", low=1)
    bilstm_relu: int = C.field(200, help="bilstm_soft: ReLU layer units (paper: 200 or 400)", low=1)
    bilstm_embed: int = C.field(300, help="bilstm_soft: word embedding width (the teacher's table, PCA-projected)",
                                low=1)
    space: str = C.field("nas_kd", help="random: the search space to sample from")
    layers: int = C.field(6, help="random: cells of the sampled student", low=1)
    sample_seed: int = C.field(0, help="random: seed of the genotype draw", range=C.SEED)
    min_params: Optional[int] = C.field(None, help="random: redraw until the student has at least this many "
                                                   "non-embedding parameters", low=0)
    optimizer: str = C.field("adamw", help="adamw (linear warm-up and decay) or adadelta (constant rate, "
                                          "rho 0.95, as Tang et al.)", choices=["adamw", "adadelta"])
    teacher: Optional[str] = C.field(None, help="teacher run directory (default runs/<task>-teacher)")
    data_dir: Optional[str] = C.field(None, help="data root or task folder; default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-retrain)")
    cache_dir: Optional[str] = C.field(None, help="teacher output cache")
    width: Optional[int] = C.field(None, help="student width (default: the genotype's)", low=1)
    embed_width: Optional[int] = C.field(None, help="genotype and random students: width of the embedding tables "
                                                    "(the teacher's, PCA-projected), mapped to the cell width by a "
                                                    "linear layer (default: the cell width)", low=1)
    kd: Optional[str] = C.field(None, help=f"distillation criteria with weights (see `naskd search --help`; "
                                           f"default {DEFAULT_KD}, {DEFAULT_TAGGING_KD} for tagging tasks)")
    temperature: float = C.field(1.0, help="soft_ce temperature", low=0, low_open=True)
    pkd_pairs: Optional[str] = C.field(None, help="explicit student-cell:teacher-layer pairs for pkd")
    fsd_memory: Optional[int] = C.field(None, help="fsd_global memory size", low=1)
    epochs: int = C.field(10, help="training epochs", low=1)
    epoch_examples: Optional[int] = C.field(None, help="an epoch is this many training examples (consecutive slices of "
                                                       "seeded passes over all of them) instead of all: dev is scored "
                                                       "and the best kept after each; for long augmented sets", low=1)
    batch_size: int = C.field(32, help="batch size", low=1)
    lr: float = C.field(1e-3, help="peak learning rate (AdamW, linear warm-up and decay)", low=0)
    weight_decay: float = C.field(1e-2, help="weight decay", low=0)
    warmup_ratio: float = C.field(0.05, help="warm-up fraction", low=0, high=1, high_open=True)
    dropout: float = C.field(0.1, help="dropout", low=0, high=1, high_open=True)
    init: Optional[str] = C.field(None, help="start from the weights of a trained student of the same architecture "
                                             "(its run or student directory) instead of from scratch: a second "
                                             "distillation stage, e.g. other criteria on the original rows")
    ema: Optional[float] = C.field(None, help="keep an exponential moving average of the weights with this decay "
                                              "(e.g. 0.999): dev is scored, and the best epoch kept, with the "
                                              "averaged weights; the raw weights' scores are logged beside them",
                                   low=0, high=1, low_open=True, high_open=True)
    keep: str = C.field("best", help="the epoch whose weights are saved and reported: best (the highest dev "
                                     "score, so dev chose it and its score leans high) or last (nothing chosen on "
                                     "dev: the score to report in a comparison)", choices=["best", "last"])
    max_train_examples: Optional[int] = C.field(None, help="seeded training subsample", low=1)
    max_eval_examples: Optional[int] = C.field(None, help="seeded dev subsample", low=1)
    max_length: Optional[int] = C.field(None, help="maximum sub-tokens (default: the teacher's recipe)", low=8)
    seed: int = C.field(0, help="random seed", range=C.SEED)
    data_seed: int = P.data_seed_field()
    augmented: Optional[str] = P.augmented_field()
    augment: bool = P.augment_field()
    device: str = C.field("auto", help="auto, cpu or cuda (training steps under bf16 autocast on cuda)",
                         choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(500, help="checkpoint every N steps (and at each epoch end; 0: at epoch ends "
                                                "only)", low=0)
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted", low=1)

    def validate(self) -> None:
        spec = get_task(self.task)
        self.kd = self.kd or default_kd(spec.name)
        if spec.kind == TAGGING and self.student == "bilstm_soft":
            raise ConfigError("bilstm_soft is a sentence classifier (Tang et al. 2019); for tagging tasks use "
                              "--student genotype, random or truncated_teacher")
        if self.student == "genotype" and not self.genotype:
            raise ConfigError("--genotype FILE is required for --student genotype (the genotype.json of a "
                              "`naskd search` run); or pick --student bilstm_soft|truncated_teacher|random")
        if self.student != "genotype" and self.genotype:
            raise ConfigError(f"--genotype is for --student genotype, not {self.student}")
        if self.student == "genotype":
            g = load_genotype(self.genotype)  # missing or malformed: refused before any work (tune: any trial)
            if genotype_kind(g) == "macro" and spec.kind == TAGGING:
                raise ConfigError(f"{self.genotype} is a macro genotype, a sentence encoder; {spec.name} is a tagging "
                                  "task (search it with a cell or teacher space)")
            if genotype_kind(g) != "cell" and (self.width is not None or self.embed_width is not None):
                raise ConfigError(f"--width and --embed-width are for cell genotypes; {self.genotype} is a "
                                  f"{genotype_kind(g)} genotype, whose widths are its own")
        # numbers are checked against their fields' declared ranges (naskd.config.resolve) before this
        if self.student == "random":
            load_space(self.space)
        if self.embed_width is not None and self.student not in ("genotype", "random"):
            raise ConfigError(f"--embed-width is for genotype and random students; {self.student} sets its "
                              "own embeddings" + (" (--bilstm-embed)" if self.student == "bilstm_soft" else ""))
        parse_kd(self.kd)

    @property
    def pairs(self) -> list:
        return parse_pairs(self.pkd_pairs)


def resolve_retrain_config(flags: dict, config_file: str | None = None) -> RetrainConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    student = flags.get("student") or file_layer.get("student") or "genotype"
    recipe = STUDENT_KINDS[student].recipe if student in STUDENT_KINDS else {}
    gfile = flags.get("genotype") or file_layer.get("genotype")
    if student == "genotype" and gfile:
        try:
            recipe = retrain_kind(student, load_genotype(gfile)).recipe    # the recipe of the genotype's kind
        except NaskdError:
            pass                              # validate() names the problem
    return C.resolve(RetrainConfig, recipe, file_layer, flags,
                     source_names=[f"recipe of {student}", f"config {config_file}", "command-line flags"])


def _genotype_for(cfg: RetrainConfig):
    """The genotype a genotype or random student is built from (None for the other baselines)."""
    if cfg.student == "genotype":
        genotype = load_genotype(cfg.genotype)
        if genotype_kind(genotype) == "cell":
            genotype.check_width(cfg.width or genotype.width, str(cfg.genotype))
        return genotype
    if cfg.student == "random":
        from dataclasses import replace

        space = load_space(cfg.space)
        width = cfg.width or space.width
        space.check(width)
        rng = np.random.default_rng([cfg.sample_seed, 31])
        for _ in range(1000):
            g = sample_genotype(space, layers=cfg.layers, width=width, rng=rng)
            if cfg.min_params is None or _cell_parameters(g, width) >= cfg.min_params:
                return replace(g)
        raise ConfigError(f"no genotype of {cfg.space} at width {width} reached --min-params {cfg.min_params} "
                          "in 1000 draws; lower it or raise --width / --layers")
    return None


def _cell_parameters(genotype, width: int) -> int:
    """Non-embedding parameters of the student of ``genotype`` (2 labels; the head is negligible)."""
    m = FixedStudent(genotype, kind="single", num_labels=2, vocab_size=1, max_positions=1, width=width)
    return sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in m.embeddings.parameters())


def build_retrain_student(cfg: RetrainConfig, spec, teacher_dir: Path, genotype, vocab_size: int):
    """The untrained student (embeddings initialised from the teacher), its depth M_s, its width, a note
    (the student table, naskd.students.kinds)."""
    return retrain_kind(cfg.student, genotype).retrain(cfg, spec, teacher_dir, genotype, vocab_size)


def init_from_student(model, path: str, task: str) -> str:
    """Copy a saved student's weights into ``model``, which must be the same architecture for the same task."""
    import json

    from safetensors.torch import load_file

    from .io import architecture_of, read_student_info

    info = read_student_info(path)
    where = info["_path"]
    if info["task"] != task:
        raise ConfigError(f"--init {path}: that student was trained for {info['task']}, not {task}")
    arch, fields = architecture_of(model)
    wanted = {"architecture": arch, "kind": model.kind, "num_labels": model.num_labels, **fields}
    norm = lambda v: json.loads(json.dumps(v))          # noqa: E731  (tuples and lists alike)
    differ = [k for k, v in wanted.items() if norm(info.get(k)) != norm(v)]
    if differ:
        parts = [f"{k} {info.get(k)!r} there, {wanted[k]!r} here" if k != "genotype" else "another genotype"
                 for k in differ]
        raise ConfigError(f"--init {path}: that student differs from this one ({'; '.join(parts)}); pass the "
                          "--student, --genotype, --width and --embed-width it was trained with")
    try:
        model.load_state_dict(load_file(f"{where}/model.safetensors"), strict=True)
    except RuntimeError as e:
        raise NaskdError(f"--init {path}: its weights do not fit this student: {e}") from None
    dev = ", ".join(f"{k} {v:.4f}" for k, v in (info.get("dev") or {}).items() if isinstance(v, float))
    return f"weights from the trained student {where}" + (f" (dev {dev})" if dev else "")


def describe_student(cfg: RetrainConfig, model, genotype) -> str:
    return retrain_kind(cfg.student, genotype).describe(cfg, model, genotype)


def retrain(cfg: RetrainConfig, *, overwrite: bool = False, resume: bool = False, on_epoch=None) -> dict:
    """Train the student ``cfg`` describes; ``on_epoch(epoch, dev_metrics)`` is called after each epoch."""
    t_start = time.time()
    seed_everything(cfg.seed)
    spec = get_task(cfg.task)
    genotype = _genotype_for(cfg)
    out, guard, teacher_dir, info = start_distillation_run("retrain", cfg, spec, overwrite=overwrite, resume=resume)
    if cfg.student == "truncated_teacher":
        k = truncate_k(cfg, info)
        if k > int(info["num_layers"]):
            raise ConfigError(f"--truncate-k {k} is more layers than the {info['num_layers']}-layer teacher has; it "
                              f"must be at most {int(info['num_layers'])}")
    if genotype is not None and genotype_kind(genotype) == "teacher" and genotype.teacher_layers != int(info["num_layers"]):
        raise ConfigError(f"{cfg.genotype} is the first {genotype.k} of a {genotype.teacher_layers}-layer teacher's "
                          f"layers; the teacher {teacher_dir} has {info['num_layers']} (pass the teacher it was "
                          "searched with, --teacher)")
    # depth and width of the student decide the criteria's layer map and projections; build it first
    seed_everything(cfg.seed)
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(teacher_dir)))
    model, m_s, width, emb_note = build_retrain_student(cfg, spec, teacher_dir, genotype, vocab_size)
    if cfg.init:
        emb_note = init_from_student(model, cfg.init, spec.name)
    ctx = kd_context(spec, info, m_s, width, teacher_dir, temperature=cfg.temperature, pkd_pairs=cfg.pairs,
                     fsd_memory=cfg.fsd_memory, seed=cfg.seed)
    kd = DistillationLoss(cfg.kd, ctx)
    device = pick_device(cfg.device)          # under torchrun this joins the process group
    # the data is there and readable: read before the run directory is made
    splits = (load_split(spec, cfg.data_dir, "train"), load_split(spec, cfg.data_dir, "dev"))
    run_dir = dist.run_directory(out, **guard)
    if dist.is_main() and not resume:         # the record of what ran: never rewritten by a resume
        write_text(run_dir / "config.yaml", yaml.safe_dump(
            {**C.to_dict(cfg), "teacher": str(teacher_dir),
             "resolved_genotype": genotype.to_dict() if genotype is not None else None}, sort_keys=False))
    with dist.main_first():                   # rank 0 fills the teacher cache; the others read it
        data = prepare(spec.name, teacher_dir, data_dir=cfg.data_dir, max_train_examples=cfg.max_train_examples,
                       max_eval_examples=cfg.max_eval_examples, seed=cfg.data_seed, requests=kd.teacher_requests(),
                       cache_dir=cfg.cache_dir, device=device, need_teacher=kd.needs_teacher,
                       augmented=resolve_augmented(cfg, spec, teacher_dir), max_length=cfg.max_length,
                       splits=splits)
    kd.setup(data.train_outputs, data.train)
    model.to(device)
    kd.to(device)
    params = list(model.parameters()) + [p for p in kd.parameters() if p.requires_grad]
    lengths = data.train.lengths

    def batches_for_epoch(e: int) -> list:
        if not cfg.epoch_examples:
            return bucket_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=e)
        rows = epoch_rows(len(lengths), cfg.epoch_examples, seed=cfg.seed, epoch=e)
        return [rows[b] for b in bucket_batches(lengths[rows], cfg.batch_size, seed=cfg.seed, epoch=e)]

    # every epoch has as many batches (the count depends only on its number of rows); under torchrun each
    # process takes ceil(batches / processes) steps (the last round padded), and too few batches are refused
    steps = len(dist.shard(batches_for_epoch(0))) * cfg.epochs
    if cfg.optimizer == "adadelta":
        opt = torch.optim.Adadelta(params, lr=cfg.lr, rho=0.95, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        from transformers import get_linear_schedule_with_warmup

        opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    n_params, n_emb = count_parameters(model)
    what = describe_student(cfg, model, genotype)
    dist.say(f"[retrain] {spec.name}: {len(data.train)} train / {len(data.dev)} dev; {what}; width {width}; "
             f"{n_params / 1e6:.2f}M parameters ({(n_params - n_emb) / 1e6:.2f}M without embeddings); "
             f"kd {cfg.kd}; {cfg.optimizer} lr {cfg.lr}{f', weight EMA {cfg.ema}' if cfg.ema else ''}; {emb_note}; "
             f"{f'{dist.world_size()} processes; ' if dist.world_size() > 1 else ''}run directory {run_dir}", flush=True)

    def loss_fn(batch, progress):
        out = model(**batch)
        return kd(out, batch.get("teacher", {}), batch, progress)

    def evaluate():
        metrics, evaluate.last = evaluate_model(model, spec, data.dev, batch_size=128, device=device,
                                                pad_id=data.pad_id)
        return metrics

    def on_best(metrics):
        save_student(run_dir / "student", model, data.tokenizer, task=spec.name,
                     extra={"teacher": str(teacher_dir), "kd": cfg.kd, "dev": metrics, "seed": cfg.seed,
                            "student": cfg.student, "description": what,
                            "max_length": data.train.meta.get("max_length")})
        if spec.kind != TAGGING:
            save_npy(run_dir / "dev_logits.npy", np.asarray(evaluate.last, dtype=np.float32))
        else:                                 # Viterbi paths, for span-level paired comparisons
            write_json(run_dir / "dev_predictions.json",
                       [[spec.labels[int(t)] for t in np.asarray(p).reshape(-1)] for p in evaluate.last])

    result = fit(model=model, optimizer=opt, scheduler=sched, epochs=cfg.epochs,
                 batches_for_epoch=batches_for_epoch,
                 make_batch=lambda rows: batch_to(data.make_batch(rows), device), loss_fn=loss_fn,
                 evaluate=evaluate, main_metric=spec.main_metric, run_dir=run_dir, device=device,
                 on_best=on_best, on_epoch=on_epoch, resume=resume, stop_after_steps=cfg.stop_after_steps,
                 checkpoint_every=cfg.checkpoint_every, extra={"kd": kd}, desc=f"retrain {spec.name}",
                 ema_decay=cfg.ema, keep=cfg.keep)
    metrics = {"command": "retrain", "task": spec.name, "status": "stopped" if result.stopped else "finished",
               "student": cfg.student, "description": what,
               "genotype": genotype.to_dict() if genotype is not None else None, "kd": cfg.kd, "dev": result.best_metrics,
               "keep": cfg.keep, "best_epoch": result.state.best_epoch + 1, "epochs_done": result.state.epoch,
               "steps": result.state.global_step,
               "train_examples": len(data.train), "rows_trained_per_epoch": result.state.rows_per_epoch,
               "parameters": n_params,
               "parameters_without_embeddings": n_params - n_emb,
               "train_seconds": round(result.state.train_seconds, 1),
               "wall_seconds_this_process": round(time.time() - t_start, 1), "history": result.state.history,
               "processes": dist.world_size()}
    if dist.is_main():
        write_json(run_dir / "metrics.json", metrics)
    return metrics
