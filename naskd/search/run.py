"""`naskd search`: differentiable architecture search under distillation.

The training subsample is split in two halves: weights are trained on one, alphas on the other (DARTS'
bilevel split). Each step is one architecture update (Architect, first or second order) on an
architecture-half batch, then one weight update on a weight-half batch; both minimise the same
distillation loss. Each epoch the genotype is derived and written with the full alphas.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from .. import config as C
from ..data.encode import bucket_batches
from ..data.readers import load_split
from ..data.tasks import TAGGING, get_task
from ..distill import DistillationLoss, parse_kd, parse_pairs
from ..errors import ConfigError, NaskdError
from ..genotype import parameter_free_share, parse
from ..network import teacher_embedding_tables
from ..pipeline import (DEFAULT_KD, DEFAULT_TAGGING_KD, batch_to, default_kd, kd_context, prepare,
                        resolve_augmented, resolve_teacher_run)
from ..predict import evaluate_model
from ..space.spec import load_space
from ..supernet import Supernet
from ..train import CHECKPOINT, LoopState, adamw, load_checkpoint, save_checkpoint
from ..utils.io import append_jsonl, write_json, write_text
from ..utils.rundir import check_run_dir, prepare_run_dir, reads_of, run_settings
from ..utils.progress import bar
from ..utils.runtime import pick_device, seed_everything
from .architect import Architect



@dataclass
class SearchConfig:
    task: str = C.field("sst2", help="task")
    teacher: Optional[str] = C.field(None, help="teacher run directory from `naskd teacher` (default: "
                                                "runs/<task>-teacher, fine-tuned first if missing)")
    data_dir: Optional[str] = C.field(None, help="data root or task folder; default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-search)")
    cache_dir: Optional[str] = C.field(None, help="teacher output cache (default $NASKD_CACHE_DIR or "
                                                  "~/.cache/naskd)")
    space: str = C.field("nas_kd", help="search space: a name in search_spaces/ or a YAML path")
    layers: int = C.field(6, help="cells in the supernet (M_s)", low=1)
    width: Optional[int] = C.field(None, help="hidden width (default: the space's, 64 for nas_kd; the "
                                              "paper's setting is 768 on a GPU)", low=1)
    nodes: Optional[int] = C.field(None, help="intermediate nodes per cell (default: the space's)", low=1)
    per_cell_alphas: bool = C.field(False, help="one set of alphas per cell instead of shared")
    order: int = C.field(1, help="1: first-order DARTS; 2: unrolled second order", choices=[1, 2])
    kd: Optional[str] = C.field(None, help=f"distillation criteria with weights: a*L_soft + (1-a)*L_hard + "
                                           f"b*L_intermediate is soft_ce=a,hard_ce=1-a,pkd=b (default "
                                           f"{DEFAULT_KD}; {DEFAULT_TAGGING_KD} for tagging tasks)")
    temperature: float = C.field(1.0, help="soft_ce temperature", low=0, low_open=True)
    pkd_pairs: Optional[str] = C.field(None, help="explicit student-cell:teacher-layer pairs for pkd, "
                                                  "e.g. 2:2,4:4 (default m(j)=round(j*M_t/M_s))")
    fsd_memory: Optional[int] = C.field(None, help="fsd_global memory size (default 100, 300 for large tasks)", low=1)
    epochs: int = C.field(6, help="search epochs", low=1)
    batch_size: int = C.field(32, help="batch size (each half)", low=1)
    lr: float = C.field(5e-4, help="weight learning rate (AdamW, cosine decay); at 2e-3 the 6-cell supernet "
                                   "stayed at chance on SST-2", low=0, low_open=True)
    weight_decay: float = C.field(1e-2, help="weight decay", low=0)
    arch_lr: float = C.field(3e-3, help="architecture learning rate (Adam, betas 0.5/0.999)", low=0, low_open=True)
    arch_weight_decay: float = C.field(1e-3, help="architecture weight decay", low=0)
    xi: Optional[float] = C.field(None, help="second order: virtual step size (default: --lr)", low=0, low_open=True)
    dropout: float = C.field(0.1, help="dropout", low=0, high=1, high_open=True)
    max_train_examples: Optional[int] = C.field(6000, help="seeded training subsample, split in two halves "
                                                           "(none: all the data); the default keeps a 6-cell "
                                                           "search on a 2-core CPU under 20 minutes; at least 4, two "
                                                           "halves of two", low=4)
    max_eval_examples: Optional[int] = C.field(None, help="seeded dev subsample", low=1)
    max_length: Optional[int] = C.field(None, help="maximum sub-tokens (default: the teacher's recipe)", low=8)
    top_k: int = C.field(2, help="incoming edges kept per node when deriving the genotype", low=1)
    max_identity: Optional[int] = C.field(None, help="at most this many identity edges per cell in the derived "
                                                     "genotype (P-DARTS); over it, the weakest take their "
                                                     "next-best op. `naskd derive` applies it to a finished run", low=0)
    grad_clip: float = C.field(5.0, help="gradient norm clip for the weights", low=0, low_open=True)
    seed: int = C.field(0, help="random seed", range=C.SEED)
    data_seed: int = C.field(0, help="seed of the training subsample; fixed by default so runs with different "
                                     "--seed train on the same examples", range=C.SEED)
    augmented: Optional[str] = C.field(None, help="a `naskd augment` run: train on the teacher's outputs for the "
                                                  "original plus synthetic examples (hard-label terms skip synthetic ones)")
    augment: bool = C.field(False, help="build the default augmentation of the training rows first (or reuse it)")
    latency_ms: Optional[float] = C.field(None, help="latency-aware search: target batch-1 forward time (ms, on "
                                                     "this machine, at the dev median length) of the derived "
                                                     "student; the architecture loss gains latency_weight * "
                                                     "relu(E[latency] / target - 1)", low=0, low_open=True)
    latency_speedup: Optional[float] = C.field(None, help="latency-aware search with the target set to the "
                                                          "teacher's batch-1 time divided by this",
                                               low=0, low_open=True)
    latency_weight: float = C.field(1.0, help="weight of the latency penalty", low=0)
    latency_table: Optional[str] = C.field(None, help="op times (JSON, as latency.json) instead of profiling "
                                                      "them here, e.g. measured on the deployment device")
    device: str = C.field("auto", help="auto, cpu or cuda (bf16 autocast on cuda)",
                          choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(100, help="checkpoint every N steps (and at each epoch end)", low=1)
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted", low=1)
    log_every: int = C.field(20, help="write metrics.jsonl every N steps", low=1)

    def validate(self) -> None:
        spec = get_task(self.task)
        self.kd = self.kd or default_kd(spec.name)
        # numbers are checked against their fields' declared ranges (naskd.config.resolve) before this
        parse_kd(self.kd)
        if self.latency_ms is not None and self.latency_speedup is not None:
            raise ConfigError("give --latency-ms or --latency-speedup, not both")
        space = self.resolved_space()
        if self.latency_table is not None:
            from .latency import LatencyTable

            table = LatencyTable.load(self.latency_table)
            table.check(space, self.latency_table)
            if self.latency_speedup is not None and table.teacher_ms is None:
                raise ConfigError(f"{self.latency_table} has no teacher_ms for --latency-speedup; give "
                                  "--latency-ms or a table with the teacher's time")
        space.check()
        if self.top_k > space.nodes + 1:
            pass  # nodes with fewer inputs keep all they have

    def resolved_space(self):
        from dataclasses import replace

        space = load_space(self.space)
        if self.width is not None:
            space = replace(space, width=self.width)
        if self.nodes is not None:
            space = replace(space, nodes=self.nodes)
        return space

    @property
    def pairs(self) -> list:
        return parse_pairs(self.pkd_pairs)


def resolve_search_config(flags: dict, config_file: str | None = None) -> SearchConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    return C.resolve(SearchConfig, file_layer, flags, source_names=[f"config {config_file}", "command-line flags"])


def run_search(cfg: SearchConfig, *, overwrite: bool = False, resume: bool = False) -> dict:
    from ..utils import dist

    if dist.launched():
        raise NaskdError("naskd search runs in one process (the architect's gradients are not reduced across "
                         "processes); run it without torchrun, or use torchrun for naskd teacher / retrain")
    t_start = time.time()
    seed_everything(cfg.seed)  # before anything draws random numbers (criterion projections too)
    spec = get_task(cfg.task)
    space = cfg.resolved_space()
    out = Path(cfg.out or f"runs/{spec.name}-search")
    guard = dict(command="search", overwrite=overwrite, resume=resume, reads=reads_of(cfg),
                 settings=run_settings(cfg))
    check_run_dir(out, **guard)               # before any work (a default teacher may be fine-tuned next)
    teacher_dir = resolve_teacher_run(spec.name, cfg.teacher, cfg.data_dir)
    from ..teachers.model import read_teacher_info

    info = read_teacher_info(teacher_dir, spec.name)
    width = space.width
    ctx = kd_context(spec, info, cfg.layers, width, teacher_dir, temperature=cfg.temperature,
                     pkd_pairs=cfg.pairs, fsd_memory=cfg.fsd_memory, seed=cfg.seed)
    kd = DistillationLoss(cfg.kd, ctx)                 # validates pairs against the teacher, before work
    # the data is there and readable: read before the run directory is made
    splits = (load_split(spec, cfg.data_dir, "train"), load_split(spec, cfg.data_dir, "dev"))
    run_dir = prepare_run_dir(out, **guard)
    if not resume:                            # the record of what ran: never rewritten by a resume
        write_text(run_dir / "config.yaml", yaml.safe_dump(
            {**C.to_dict(cfg), "teacher": str(teacher_dir), "resolved_space": space.to_dict()}, sort_keys=False))
    device = pick_device(cfg.device)

    data = prepare(spec.name, teacher_dir, data_dir=cfg.data_dir, max_train_examples=cfg.max_train_examples,
                   max_eval_examples=cfg.max_eval_examples, seed=cfg.data_seed, requests=kd.teacher_requests(),
                   cache_dir=cfg.cache_dir, device=device, need_teacher=kd.needs_teacher,
                   augmented=resolve_augmented(cfg, spec, teacher_dir),
                   max_length=cfg.max_length, splits=splits)
    kd.setup(data.train_outputs, data.train)
    n = len(data.train)
    perm = np.random.default_rng([cfg.seed, 2]).permutation(n)
    w_half, a_half = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    lengths = data.train.lengths

    seed_everything(cfg.seed)
    model = Supernet(space, layers=cfg.layers, width=width, kind=spec.kind, num_labels=spec.num_labels,
                     vocab_size=len(data.tokenizer), per_cell_alphas=cfg.per_cell_alphas, dropout=cfg.dropout,
                     seed=cfg.seed)
    emb_note = model.embeddings.init_from_teacher(teacher_embedding_tables(teacher_dir))
    model.to(device)
    kd.to(device)
    weights = model.weights() + [p for p in kd.parameters() if p.requires_grad]
    w_opt = adamw(weights, lr=cfg.lr, weight_decay=cfg.weight_decay)
    a_opt = torch.optim.Adam(model.alphas(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                             weight_decay=cfg.arch_weight_decay)

    def epoch_batches(epoch):
        bw = bucket_batches(lengths[w_half], cfg.batch_size, seed=cfg.seed, epoch=epoch)
        ba = bucket_batches(lengths[a_half], cfg.batch_size, seed=cfg.seed + 1, epoch=epoch)
        steps = min(len(bw), len(ba))
        return [(w_half[bw[i]], a_half[ba[i]]) for i in range(steps)]

    steps_per_epoch = len(epoch_batches(0))
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        w_opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def loss_fn(batch):
        with torch.autocast(**autocast):
            out = model(**batch)
            loss, logs = kd(out, batch["teacher"] if "teacher" in batch else {}, batch)
        if spec.kind == TAGGING:   # word accuracy of the emissions' argmax (a cheap progress signal)
            keep = out["word_mask"]
            batch["_acc"] = float((out["logits"].argmax(-1) == batch["labels"])[keep].float().mean())
        elif spec.kind != "regression":
            hit = out["logits"].argmax(-1) == batch["labels"]
            if "has_label" in batch:          # synthetic examples have no gold label
                hit = hit[batch["has_label"]]
            batch["_acc"] = float(hit.float().mean()) if hit.numel() else float("nan")
        batch["_logs"] = logs
        return loss

    latency = latency_setup(cfg, space, model, data, spec, teacher_dir, run_dir, width, device, resume)
    architect = Architect(loss_fn, weights, model.alphas(), a_opt, order=cfg.order, xi=cfg.xi or cfg.lr,
                          weight_decay=cfg.weight_decay, penalty=latency.penalty if latency else None)
    n_params = sum(p.numel() for p in model.weights())
    print(f"[search] {spec.name}: {n} training examples ({len(w_half)} weights / {len(a_half)} architecture"
          f"{'; subsample of ' + str(cfg.max_train_examples) if cfg.max_train_examples else ''}), "
          f"{len(data.dev)} dev; space {space.name} ({len(space.ops)} ops, {space.nodes} nodes), {cfg.layers} "
          f"cells, width {width}, {n_params / 1e6:.2f}M supernet weights; order {cfg.order}; kd {cfg.kd}; "
          f"teacher {teacher_dir} ({info['num_layers']} layers); {emb_note}; {cfg.epochs} epochs x "
          f"{steps_per_epoch} steps on {device}; run directory {run_dir}", flush=True)

    ck_path = run_dir / CHECKPOINT
    ck = dict(modules={"model": model, "kd": kd}, optimizers={"w": w_opt, "a": a_opt}, schedulers={"w": sched})
    state = LoopState()
    if resume:
        state = LoopState(**load_checkpoint(ck_path, **ck))
    log_path = run_dir / "metrics.jsonl"
    steps_here = 0
    stopped = False
    genotype = None

    def evaluate_dev():
        return evaluate_model(model, spec, data.dev, batch_size=128, device=device, pad_id=data.pad_id)[0]

    while state.epoch < cfg.epochs:
        batches = epoch_batches(state.epoch)
        model.train()
        kd.train()
        pbar = bar(len(batches), f"search epoch {state.epoch + 1}/{cfg.epochs}", initial=state.step_in_epoch)
        t0 = time.perf_counter()
        acc_sum = acc_n = 0
        ema = None
        while state.step_in_epoch < len(batches):
            rows_w, rows_a = batches[state.step_in_epoch]
            bw = batch_to(data.make_batch(rows_w), device)
            ba = batch_to(data.make_batch(rows_a), device)
            for b in (bw, ba):   # where the search stands, for criteria with schedules
                b.update(_epoch=state.epoch, _epochs=cfg.epochs,
                         _progress=(state.epoch * len(batches) + state.step_in_epoch) / (cfg.epochs * len(batches)))
            # architecture step on the architecture half (alphas only)
            val_loss = architect.step(bw, ba)
            # weight step on the weight half (weights only)
            for p in model.alphas():
                p.requires_grad_(False)
            loss = loss_fn(bw)
            if not torch.isfinite(loss):
                pbar.close()
                raise NaskdError(f"search loss became {loss.item()} at epoch {state.epoch + 1}, step "
                                 f"{state.step_in_epoch + 1}; lower --lr / --arch-lr; the last checkpoint is kept")
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            w_opt.step()
            sched.step()
            for p in model.alphas():
                p.requires_grad_(True)
            state.step_in_epoch += 1
            state.global_step += 1
            steps_here += 1
            if "_acc" in ba:
                acc_sum += ba["_acc"]
                acc_n += 1
            lv = float(loss.detach())
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            ent = model.alpha_entropy()
            pbar.update(1)
            pbar.set_postfix(loss=f"{ema:.3f}", arch_acc=f"{acc_sum / max(1, acc_n):.3f}", H=f"{ent:.3f}",
                             refresh=False)
            if state.global_step % cfg.log_every == 0:
                append_jsonl(log_path, {"epoch": state.epoch, "step": state.global_step, "loss_w": lv,
                                        "loss_a": val_loss, "latency_penalty": architect.last_penalty,
                                        "arch_acc": ba.get("_acc"), "alpha_entropy": ent,
                                        "lr": sched.get_last_lr()[0], **bw.get("_logs", {})})
            stop = cfg.stop_after_steps is not None and steps_here >= cfg.stop_after_steps
            if stop or state.global_step % cfg.checkpoint_every == 0:
                state.train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save_checkpoint(ck_path, state=state, **ck)
            if stop:
                stopped = True
                break
        pbar.close()
        if stopped:
            break
        state.train_seconds += time.perf_counter() - t0
        dev = evaluate_dev()
        genotype = parse(model.arch["ops"], model.arch["agg"], space, layers=cfg.layers, width=width, k=cfg.top_k,
                         max_identity=cfg.max_identity)
        entry = {"epoch": state.epoch + 1, "dev": dev, "arch_acc": acc_sum / max(1, acc_n),
                 "alpha_entropy": model.alpha_entropy(), "genotype": genotype.to_dict(),
                 "alphas": {"ops": model.op_weights().tolist(), "agg": model.agg_weights().tolist(),
                            "op_names": list(space.ops), "agg_names": list(space.aggregators)}}
        lat_text = ""
        if latency:
            entry["latency"] = latency.summary(genotype)
            lat_text = (f"; latency estimate {entry['latency']['genotype_ms']:.2f} ms (expected "
                        f"{entry['latency']['expected_ms']:.2f}, target {latency.target_text})")
        state.history.append(entry)
        write_json(run_dir / "history.json", state.history)
        genotype.save(run_dir / "genotype.json")
        append_jsonl(log_path, {"epoch": state.epoch + 1, "dev": dev, "genotype": genotype.describe()})
        print(f"[search] epoch {state.epoch + 1}/{cfg.epochs}: supernet dev {dev}, arch-half acc "
              f"{entry['arch_acc']:.4f}, alpha entropy {entry['alpha_entropy']:.3f}; genotype "
              f"{genotype.describe()}{lat_text}", flush=True)
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint(ck_path, state=state, **ck)

    result = {"command": "search", "task": spec.name, "status": "stopped" if stopped else "finished",
              "epochs_done": state.epoch, "steps": state.global_step, "train_examples": n,
              "subsample": cfg.max_train_examples, "space": space.name, "layers": cfg.layers, "width": width,
              "order": cfg.order, "kd": cfg.kd, "teacher": str(teacher_dir),
              "search_seconds": round(state.train_seconds, 1),
              "wall_seconds_this_process": round(time.time() - t_start, 1),
              "supernet_weights": n_params}
    if state.history:
        last = state.history[-1]
        g = last["genotype"]
        from ..genotype import Genotype

        genotype = Genotype.from_dict(g)
        share = parameter_free_share(genotype)
        result.update(genotype=g, genotype_text=genotype.describe(), dev=last["dev"],
                      parameter_free_share=share)
        if "latency" in last:
            result["latency"] = lat = last["latency"]
            if lat.get("target_ms") is not None:
                lat["within_target"] = lat["genotype_ms"] <= lat["target_ms"]
                within = [h["epoch"] for h in state.history
                          if h.get("latency", {}).get("genotype_ms", float("inf")) <= lat["target_ms"]]
                if not lat["within_target"]:
                    msg = (f"the derived student's estimate {lat['genotype_ms']:.2f} ms is over the target "
                           f"{lat['target_ms']:.2f} ms (the search moves around the target once near it); "
                           + (f"epochs {within} derived students within it (history.json), or " if within else "")
                           + "search longer or with a larger --latency-weight")
                    print(f"[search] warning: {msg}", flush=True)
                    result["latency_warning"] = msg
        if share > 0.5:
            msg = (f"the derived cell is dominated by parameter-free ops ({share:.0%} of its edges: "
                   "DARTS' known collapse onto skip connections); consider more epochs at a lower --arch-lr, "
                   "--order 2, or a space without identity")
            warnings.warn(msg)
            print(f"[search] warning: {msg}", flush=True)
            result["warning"] = msg
    write_json(run_dir / "metrics.json", result)
    return result


class _Latency:
    """The latency table of a run, its target and the penalty the architect adds."""

    def __init__(self, table, target_ms, weight, space, model, layers, k, source, width, max_identity=None):
        self.table, self.target_ms, self.weight, self.source = table, target_ms, weight, source
        self.space, self.model, self.layers, self.k, self.width = space, model, layers, k, width
        self.max_identity = max_identity

    @property
    def target_text(self) -> str:
        return "none (estimates only)" if self.target_ms is None else f"{self.target_ms:.2f} ms"

    def expected(self):
        from .latency import expected_latency

        m = self.model
        return expected_latency(m.arch["ops"], m.agg_weights(), self.space, self.table, layers=self.layers, k=self.k)

    def derived_ms(self) -> float:
        """The estimate of the student the alphas derive now."""
        from .latency import genotype_latency

        m = self.model
        with torch.no_grad():
            g = parse(m.arch["ops"], m.arch["agg"], self.space, layers=self.layers, width=self.width, k=self.k,
                      max_identity=self.max_identity)
        return genotype_latency(g, self.table)

    def penalty(self):
        """The latency term, while the derived student is over the target; None once it is within (the
        student that ships is the derived one: from there on the task loss alone chooses)."""
        from .latency import latency_penalty

        if self.target_ms is None or self.weight == 0 or self.derived_ms() <= self.target_ms:
            return None
        return latency_penalty(self.expected(), self.target_ms, self.weight)

    def summary(self, genotype) -> dict:
        from .latency import genotype_latency

        with torch.no_grad():
            expected = float(self.expected())
        out = {"genotype_ms": genotype_latency(genotype, self.table), "expected_ms": expected,
               "target_ms": self.target_ms, "table": self.source}
        if self.table.teacher_ms:
            out["teacher_ms"] = self.table.teacher_ms
            out["estimated_speedup"] = self.table.teacher_ms / out["genotype_ms"]
        return out


def latency_setup(cfg, space, model, data, spec, teacher_dir, run_dir, width, device, resume):
    """None without latency options; otherwise the run's table (read back on --resume, read from
    --latency-table, or profiled here at batch 1 and the dev median length) and target."""
    if cfg.latency_ms is None and cfg.latency_speedup is None and cfg.latency_table is None:
        return None
    from .latency import LatencyTable, profile_latency

    path = run_dir / "latency.json"
    if resume and path.is_file():
        table, source = LatencyTable.load(path), str(path)
    elif cfg.latency_table is not None:
        table, source = LatencyTable.load(cfg.latency_table), cfg.latency_table
    else:
        teacher = None
        if cfg.latency_speedup is not None:
            from ..teachers.model import load_teacher

            teacher = load_teacher(teacher_dir)[0]
        length = int(np.median(data.dev.lengths))
        print(f"[search] profiling the ops at batch 1 and {length} tokens (the dev median) on {device}", flush=True)
        with torch.random.fork_rng(devices=[]):     # profiling draws no numbers from the search's streams
            table = profile_latency(space, width=width, length=length, kind=spec.kind,
                                    num_labels=spec.num_labels, vocab_size=len(data.tokenizer), device=device,
                                    teacher=teacher)
        source = "profiled"
    table.check(space, source)
    write_json(path, table.to_dict())
    target = cfg.latency_ms if cfg.latency_ms is not None else (
        table.teacher_ms / cfg.latency_speedup if cfg.latency_speedup is not None else None)
    lat = _Latency(table, target, cfg.latency_weight, space, model, cfg.layers, cfg.top_k, source, width,
                   cfg.max_identity)
    ops = ", ".join(f"{k} {v:.2f}" for k, v in table.ops.items() if k != "none")
    print(f"[search] latency table ({source}, ms at batch 1, {table.length} tokens): {ops}; skeleton "
          f"{table.skeleton_ms:.2f} + {table.cell_skeleton_ms:.2f} per cell"
          + (f"; teacher {table.teacher_ms:.2f}" if table.teacher_ms else "") + f"; target {lat.target_text}",
          flush=True)
    return lat
