"""``--strategy darts``: differentiable architecture search (DARTS, Liu et al. 2019) under distillation.

The training rows are split in two halves: weights train on one, alphas on the other (DARTS' bilevel
split). Each step is one architecture update (Architect, first or second order) on an architecture-half
batch, then one weight update on a weight-half batch, through :func:`naskd.train.fit`; both minimise the
same distillation loss. After each epoch the genotype is derived and written with the full alphas.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from ...data.encode import bucket_batches
from ...data.tasks import TAGGING
from ...genotype import Genotype, parameter_free_share, parse
from ...network import teacher_embedding_tables
from ...pipeline import batch_to
from ...predict import evaluate_model
from ...supernet import Supernet
from ...train import adamw, cosine_schedule, fit
from ...utils import dist
from ...utils.io import append_jsonl, read_json, write_json
from ...utils.runtime import mixed_precision, seed_everything
from ..architect import Architect
from . import Strategy, register_strategy


@register_strategy
class Darts(Strategy):
    name = "darts"
    summary = "differentiable search over a cell space: softmax mixtures, bilevel first/second order"
    space_kinds = ("cell",)

    @classmethod
    def check(cls, cfg, space_kind: str) -> None:
        super().check(cfg, space_kind)
        from ...errors import ConfigError

        if cfg.speedup is not None or cfg.latency_ms is not None or cfg.latency_table is not None:
            raise ConfigError("darts has no latency term: its expected-latency penalty over the softmax mixture "
                              "drove cells onto the cheapest ops and was removed (issue 20); search under a "
                              "latency constraint with --strategy spos or random (--speedup S or --latency-ms MS)")

    def run(self) -> dict:
        env = self.env
        cfg, spec, data, kd, space, device, run_dir = (env.cfg, env.spec, env.data, env.kd, env.space, env.device,
                                                       env.run_dir)
        width = space.width
        n = len(data.train)
        perm = np.random.default_rng([cfg.seed, 2]).permutation(n)
        w_half, a_half = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
        lengths = data.train.lengths

        seed_everything(cfg.seed)
        model = Supernet(space, layers=cfg.layers, width=width, kind=spec.kind, num_labels=spec.num_labels,
                         vocab_size=len(data.tokenizer), per_cell_alphas=cfg.per_cell_alphas, dropout=cfg.dropout,
                         seed=cfg.seed)
        emb_note = model.embeddings.init_from_teacher(teacher_embedding_tables(env.teacher_dir))
        model.to(device)
        kd.to(device)
        weights = model.weights() + [p for p in kd.parameters() if p.requires_grad]
        lr = cfg.lr if cfg.lr is not None else 5e-4
        w_opt = adamw(weights, lr=lr, weight_decay=cfg.weight_decay)
        a_opt = torch.optim.Adam(model.alphas(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=cfg.arch_weight_decay)

        def epoch_batches(epoch):
            bw = bucket_batches(lengths[w_half], cfg.batch_size, seed=cfg.seed, epoch=epoch)
            ba = bucket_batches(lengths[a_half], cfg.batch_size, seed=cfg.seed + 1, epoch=epoch)
            steps = min(len(bw), len(ba))
            return [(w_half[bw[i]], a_half[ba[i]]) for i in range(steps)]

        steps_per_epoch = len(epoch_batches(0))
        total_steps = steps_per_epoch * cfg.epochs
        sched = cosine_schedule(w_opt, total_steps)

        # what the current step's loss saw: where training stands (set by before_step / loss_fn) and, after
        # each supernet_loss call, its criteria's values and its batch accuracy (a cheap progress signal)
        now: dict = {"progress": None, "logs": {}, "acc": {}}

        def supernet_loss(batch):
            with mixed_precision(device):        # also for the Architect's own forwards (order 2)
                out = model(**batch)
                loss, logs = kd(out, batch["teacher"] if "teacher" in batch else {}, batch, now["progress"])
            acc = float("nan")
            if spec.kind == TAGGING:   # word accuracy of the emissions' argmax
                keep = out["word_mask"]
                acc = float((out["logits"].argmax(-1) == batch["labels"])[keep].float().mean())
            elif spec.kind != "regression":
                hit = out["logits"].argmax(-1) == batch["labels"]
                if "has_label" in batch:          # synthetic examples have no gold label
                    hit = hit[batch["has_label"]]
                acc = float(hit.float().mean()) if hit.numel() else float("nan")
            now["acc"][id(batch)] = acc          # by batch: order 2 evaluates the weight batch last
            now["logs"] = logs
            return loss

        architect = Architect(supernet_loss, weights, model.alphas(), a_opt, order=cfg.order, xi=cfg.xi or lr,
                              weight_decay=cfg.weight_decay)
        n_params = sum(p.numel() for p in model.weights())
        dist.say(f"[search] darts on {spec.name}: {n} training examples ({len(w_half)} weights / {len(a_half)} "
                 f"architecture{'; subsample of ' + str(cfg.max_train_examples) if cfg.max_train_examples else ''}), "
                 f"{len(data.dev)} dev; space {space.name} ({len(space.ops)} ops, {space.nodes} nodes), {cfg.layers} "
                 f"cells, width {width}, {n_params / 1e6:.2f}M supernet weights; order {cfg.order}; kd {cfg.kd}; "
                 f"teacher {env.teacher_dir} ({env.teacher_info['num_layers']} layers); {emb_note}; {cfg.epochs} "
                 f"epochs x {steps_per_epoch} steps on {device}; run directory {run_dir}", flush=True)

        arch_acc = {"sum": 0.0, "n": 0}

        def make_batch(rows):
            rows_w, rows_a = rows
            return {**batch_to(data.make_batch(rows_w), device), "_arch_batch": batch_to(data.make_batch(rows_a), device)}

        def before_step(batch, progress):
            """The architecture step on the architecture half (alphas only); weights are left for the loop. Under
            torchrun every rank steps, its gradients averaged with the others' (a rank without rows in this
            step, ``batch`` None, contributes zeros)."""
            ba = batch.pop("_arch_batch") if batch is not None else None
            now["progress"], now["acc"] = progress, {}
            for p in model.alphas():
                p.requires_grad_(True)
            val_loss = architect.step(batch, ba)
            acc = now["acc"].get(id(ba), float("nan"))     # the architecture half's accuracy
            for p in model.alphas():      # the weight step leaves the alphas alone
                p.requires_grad_(False)
            if not math.isnan(acc):
                arch_acc["sum"] += acc
                arch_acc["n"] += 1
            return {"loss_a": val_loss, "arch_acc": None if math.isnan(acc) else acc,
                    "alpha_entropy": model.alpha_entropy()}

        def loss_fn(batch, progress):
            now["progress"] = progress
            loss = supernet_loss(batch)
            return loss, {k: float(v) for k, v in now["logs"].items()}

        history_path = run_dir / "history.json"
        history = read_json(history_path, missing="") if env.resume and history_path.is_file() else []

        def evaluate():
            return evaluate_model(model, spec, data.dev, batch_size=128, device=device, pad_id=data.pad_id)[0]

        def on_epoch(epoch, dev):
            genotype = parse(model.arch["ops"], model.arch["agg"], space, layers=cfg.layers, width=width,
                             k=cfg.top_k, max_identity=cfg.max_identity)
            dev = {k: v for k, v in dev.items() if k != "epoch"}
            entry = {"epoch": epoch + 1, "dev": dev, "arch_acc": arch_acc["sum"] / max(1, arch_acc["n"]),
                     "alpha_entropy": model.alpha_entropy(), "genotype": genotype.to_dict(),
                     "alphas": {"ops": model.op_weights().tolist(), "agg": model.agg_weights().tolist(),
                                "op_names": list(space.ops), "agg_names": list(space.aggregators)}}
            arch_acc.update(sum=0.0, n=0)
            del history[epoch:]
            history.append(entry)
            write_json(history_path, history)
            genotype.save(run_dir / "genotype.json")
            append_jsonl(run_dir / "metrics.jsonl", {"epoch": epoch + 1, "dev": dev, "genotype": genotype.describe()})
            dist.say(f"[search] epoch {epoch + 1}/{cfg.epochs}: supernet dev {dev}, arch-half acc "
                     f"{entry['arch_acc']:.4f}, alpha entropy {entry['alpha_entropy']:.3f}; genotype "
                     f"{genotype.describe()}", flush=True)

        for p in model.alphas():
            p.requires_grad_(False)
        result = fit(model=model, optimizer=w_opt, scheduler=sched, epochs=cfg.epochs,
                     batches_for_epoch=epoch_batches, make_batch=make_batch, loss_fn=loss_fn, evaluate=evaluate,
                     main_metric=spec.main_metric, run_dir=run_dir, device=device, on_epoch=on_epoch,
                     resume=env.resume, stop_after_steps=cfg.stop_after_steps, checkpoint_every=cfg.checkpoint_every,
                     grad_clip=cfg.grad_clip, extra={"kd": kd}, desc="search", log_every=cfg.log_every,
                     before_step=before_step, more_optimizers={"arch": a_opt},
                     rows_in=lambda rows: len(rows[0]) + len(rows[1]),
                     postfix=lambda: {"H": f"{model.alpha_entropy():.3f}"}, shard="rows",
                     loss_rows=lambda rows: len(rows[0]))
        replicas = self.processes(model, kd)
        return dist.from_main(lambda: self.write_metrics(result, history, on_epoch, replicas, n, width, n_params))

    def write_metrics(self, result, history: list, on_epoch, replicas: dict, n: int, width: int, n_params: int) -> dict:
        """metrics.json of the run (rank 0 under torchrun)."""
        env = self.env
        cfg, spec, space, run_dir = env.cfg, env.spec, env.space, env.run_dir
        state = result.state
        if len(history) < state.epoch and not result.stopped:     # killed between the checkpoint and on_epoch
            on_epoch(state.epoch - 1, state.history[-1])
        out = {"command": "search", "strategy": "darts", "task": spec.name,
               "status": "stopped" if result.stopped else "finished",
               "epochs_done": state.epoch, "steps": state.global_step, "train_examples": n,
               "subsample": cfg.max_train_examples, "space": space.name, "layers": cfg.layers, "width": width,
               "order": cfg.order, "kd": cfg.kd, "teacher": str(env.teacher_dir),
               "search_seconds": round(state.train_seconds, 1),
               "wall_seconds_this_process": round(time.time() - env.t_start, 1),
               "supernet_weights": n_params, **replicas}
        if history:
            last = history[-1]
            g = last["genotype"]
            genotype = Genotype.from_dict(g)
            share = parameter_free_share(genotype)
            out.update(genotype=g, genotype_text=genotype.describe(), dev=last["dev"], parameter_free_share=share)
            if share > 0.5:
                msg = (f"the derived cell is dominated by parameter-free ops ({share:.0%} of its edges: "
                       "DARTS' known collapse onto skip connections); consider more epochs at a lower --arch-lr, "
                       "--order 2, or a space without identity")
                warnings.warn(msg)
                dist.say(f"[search] warning: {msg}", flush=True)
                out["warning"] = msg
        write_json(run_dir / "metrics.json", out)
        return out
