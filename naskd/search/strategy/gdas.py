"""``--strategy gdas``: differentiable search over the macro space's sizes (GDAS, Dong & Yang 2019,
"Searching for a Robust Neural Architecture in Four GPU Hours").

DARTS relaxes a choice into a softmax mixture of every option's output; on a space of sizes that is a sum
over (op x width) modules at every layer position, every depth and every embedding width, too costly on a
CPU, and a mixture of different widths is not any student of the space. GDAS keeps DARTS' architecture
parameters and bilevel split but samples one path per step: for each dimension d of the space with
options o_1..o_m and parameters alpha_d (m,), Gumbel noise g_j is drawn and the path takes
j* = argmax_j (alpha_dj + g_j); the option's output is multiplied by the straight-through gate
h_j* - s_j*.detach() + s_j* with s = softmax((alpha_d + g) / tau) (GDAS eq. 4-5; value 1, gradient
d s_j* / d alpha_d), so the architecture loss reaches alpha through one path. tau decays linearly from
``TAU_MAX`` to ``TAU_MIN`` over training (GDAS: 10 to 0.1).

The training rows (the selection split carved out first) are split in two halves as in DARTS: each step
one architecture update (Adam on alpha, ``--arch-lr``, ``--arch-weight-decay``, first order) on a sampled
path over an architecture-half batch, then one weight update of the weight-sharing supernet on a path
sampled from the same distribution over a weight-half batch, both under the distillation criteria.

Then the derivation: the most probable architecture (each dimension's argmax) and ``--trials`` draws from
the learned distribution (temperature 1) that meet the constraint, each scored on the selection split
with inherited weights, with its log-probability under alpha (``alpha_logprob``, the DARTS alpha score of
the ranking study); the pick is the most accurate meeting the constraint, as for spos, so that
``naskd derive`` picks the same from pareto.json. ``alphas.json`` holds each dimension's probabilities
after every epoch.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch
from torch import nn

from ...data.encode import bucket_batches
from ...pipeline import batch_to
from ...predict import evaluate_model
from ...train import adamw, cosine_schedule, fit
from ...utils import dist
from ...utils.io import append_jsonl, write_json
from ...utils.progress import bar
from ...utils.runtime import mixed_precision
from . import register_strategy
from .oneshot import PROBE_ROWS, _key, _OneShot, _PathModel, candidate_log

TAU_MAX, TAU_MIN = 10.0, 0.1
DRAW_ATTEMPTS = 50          # draws per wanted candidate before the derivation stops looking


class ArchParameters(nn.Module):
    """One vector of architecture parameters per dimension of a one-shot space (zeros: uniform).

    ``dims``: {dimension name: options} (:meth:`naskd.space.oneshot.OneShotSpace.dimensions`)."""

    def __init__(self, dims: dict):
        super().__init__()
        self.options = {name: list(opts) for name, opts in dims.items()}
        self.alpha = nn.ParameterDict({name: nn.Parameter(torch.zeros(len(opts))) for name, opts in dims.items()})

    def sample(self, rng: np.random.Generator, tau: float, *, gates: bool = True) -> tuple[dict, dict]:
        """(choices, gates): each dimension's option j* = argmax(alpha + Gumbel noise from ``rng``), and,
        with ``gates``, its straight-through gate (a scalar tensor equal to 1 whose gradient is that of
        softmax((alpha + noise) / tau)[j*])."""
        choices, out = {}, {}
        for name, a in self.alpha.items():
            noise = torch.as_tensor(rng.gumbel(size=a.numel()), dtype=a.dtype, device=a.device)
            logits = a + noise
            j = int(torch.argmax(logits.detach()))
            choices[name] = self.options[name][j]
            if gates:
                s = torch.softmax(logits / tau, -1)[j]
                out[name] = 1.0 - s.detach() + s
        return choices, out

    def draw(self, rng: np.random.Generator) -> dict:
        """Choices drawn from softmax(alpha) of each dimension (temperature 1)."""
        out = {}
        for name, p in self.probabilities().items():
            out[name] = self.options[name][int(rng.choice(len(p), p=p))]
        return out

    def argmax(self) -> dict:
        return {name: self.options[name][int(torch.argmax(a.detach()))] for name, a in self.alpha.items()}

    @torch.no_grad()
    def probabilities(self) -> dict[str, np.ndarray]:
        out = {}
        for name, a in self.alpha.items():
            p = torch.softmax(a.detach().double().cpu(), -1).numpy()
            out[name] = p / p.sum()
        return out

    def log_prob(self, choices: dict, used) -> float:
        """Sum over the dimensions ``used`` of log softmax(alpha)[choice] (nats)."""
        lp = 0.0
        probs = self.probabilities()
        for name in used:
            lp += float(np.log(probs[name][self.options[name].index(choices[name])]))
        return lp

    def entropy(self) -> float:
        """Mean over dimensions of the entropy of softmax(alpha) (nats)."""
        ps = self.probabilities().values()
        return float(np.mean([-(p * np.log(np.clip(p, 1e-30, None))).sum() for p in ps]))


def used_dimensions(space, genotype) -> list[str]:
    """The dimensions whose choice ``genotype`` uses (changing one changes the genotype): for the macro
    space, op_i and width_i only for i below its depth."""
    choices = space.choices_of(genotype)
    k = _key(genotype)
    out = []
    for name, opts in space.dimensions().items():
        other = next((o for o in opts if o != choices[name]), None)
        if other is None:
            continue
        try:
            changed = _key(space.from_choices({**choices, name: other})) != k
        except Exception:     # a choice that does not build with the others is used
            changed = True
        if changed:
            out.append(name)
    return out


@register_strategy
class GDAS(_OneShot):
    name = "gdas"
    summary = ("differentiable search over a space of sizes: DARTS' architecture parameters and bilevel "
               "split, one Gumbel-sampled path per step (GDAS); macro spaces")
    space_kinds = ("macro",)

    @classmethod
    def check(cls, cfg, space_kind: str) -> None:
        super().check(cfg, space_kind)
        from ...errors import ConfigError

        if cfg.order != 1:
            raise ConfigError("--order 2 is a darts setting; gdas updates the architecture parameters first order "
                              "through its sampled path")

    def tau(self, progress: float) -> float:
        return TAU_MAX - (TAU_MAX - TAU_MIN) * float(progress)

    def run(self) -> dict:
        self.setup()
        env, cfg = self.env, self.env.cfg
        data, device, kd, run_dir = env.data, env.device, env.kd, env.run_dir
        net, weights = self.build_supernet()
        arch = ArchParameters(self.space.dimensions()).to(device)
        opt = adamw(weights, lr=self.lr, weight_decay=cfg.weight_decay)
        a_opt = torch.optim.Adam(arch.parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=cfg.arch_weight_decay)
        rows = self.train_rows
        perm = np.random.default_rng([cfg.seed, 2]).permutation(len(rows))
        w_half, a_half = np.sort(rows[perm[: len(rows) // 2]]), np.sort(rows[perm[len(rows) // 2:]])

        def batches_for_epoch(e):
            bw = bucket_batches(self.lengths[w_half], cfg.batch_size, seed=cfg.seed, epoch=e)
            ba = bucket_batches(self.lengths[a_half], cfg.batch_size, seed=cfg.seed + 1, epoch=e)
            return [(w_half[bw[i]], a_half[ba[i]]) for i in range(min(len(bw), len(ba)))]

        steps_per_epoch = len(batches_for_epoch(0))
        sched = cosine_schedule(opt, steps_per_epoch * cfg.epochs)

        def make_batch(r):
            return {**batch_to(data.make_batch(r[0]), device), "_arch_batch": batch_to(data.make_batch(r[1]), device)}

        def before_step(batch, progress):
            """The architecture step on the architecture half: one Gumbel path (the same on every rank: drawn
            from (seed, step)), gradients to alpha only, averaged over the ranks by rows under torchrun (a rank
            with no rows in this step, ``batch`` None, contributes zeros)."""
            ba = batch.pop("_arch_batch") if batch is not None else None
            tau = self.tau(progress.fraction)
            choices, gates = arch.sample(np.random.default_rng([cfg.seed, 29, progress.step]), tau)
            params = list(arch.parameters())
            if ba is None:
                loss, grads, n = torch.zeros(()), [torch.zeros_like(p) for p in params], 0
            else:
                with mixed_precision(device):        # bf16 on CUDA; autograd.grad below, outside it
                    out = net(path=self.space.from_choices(choices), gates=gates, **ba)
                    loss, _ = kd(out, ba.get("teacher", {}), ba, progress)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                n = int(ba["input_ids"].shape[0])
            grads = dist.mean_over_ranks(grads, n)
            a_opt.zero_grad(set_to_none=True)
            for p, g in zip(params, grads):
                p.grad = g.detach()
            a_opt.step()
            return {"loss_a": float(loss.detach()), "tau": tau, "alpha_entropy": arch.entropy()}

        def loss_fn(batch, progress):
            choices, _ = arch.sample(np.random.default_rng([cfg.seed, 31, progress.step]), 1.0, gates=False)
            out = net(path=self.space.from_choices(choices), **batch)
            return kd(out, batch.get("teacher", {}), batch, progress)

        probe_rows = self.selection.select(np.arange(min(PROBE_ROWS, len(self.selection))))
        alphas_path = run_dir / "alphas.json"
        history = json.loads(alphas_path.read_text()) if env.resume and alphas_path.is_file() else []

        def evaluate():
            g = self.space.from_choices(arch.argmax())
            m, _ = evaluate_model(_PathModel(net, g), env.spec, probe_rows, batch_size=256, device=device,
                                  pad_id=data.pad_id)
            return {"argmax_score": float(m[self.metric]), "alpha_entropy": arch.entropy()}

        def on_epoch(epoch, metrics):
            del history[epoch:]
            history.append({"epoch": epoch + 1, "argmax": self.space.describe(self.space.from_choices(arch.argmax())),
                            "alpha_entropy": arch.entropy(),
                            "probabilities": {k: {str(o): float(x) for o, x in zip(arch.options[k], p)}
                                              for k, p in arch.probabilities().items()}})
            write_json(alphas_path, history)

        for p in arch.parameters():          # the weight step leaves alpha alone
            p.requires_grad_(True)
        n_params = sum(p.numel() for p in net.parameters())
        dist.say(f"[search] gdas on {env.spec.name}: space {self.space.name} ({self.space.kind}, "
                 f"{self.space.size():,} architectures), {n_params / 1e6:.2f}M supernet weights; {len(w_half)} weight / "
                 f"{len(a_half)} architecture rows, {len(self.selection)} selection rows carved from train (dev is never "
                 f"used to choose); kd {cfg.kd}; lr {self.lr}, arch lr {cfg.arch_lr}; tau {TAU_MAX:g} -> {TAU_MIN:g}; "
                 f"{cfg.epochs} epochs x {steps_per_epoch} steps on {device}; then the argmax and up to {cfg.trials} "
                 f"draws from the learned distribution; run directory {run_dir}", flush=True)
        result = fit(model=net, optimizer=opt, scheduler=sched, epochs=cfg.epochs, batches_for_epoch=batches_for_epoch,
                     make_batch=make_batch, loss_fn=loss_fn, evaluate=evaluate, main_metric="argmax_score",
                     run_dir=run_dir, device=device, resume=env.resume, stop_after_steps=cfg.stop_after_steps,
                     checkpoint_every=cfg.checkpoint_every, grad_clip=cfg.grad_clip, extra={"kd": kd, "arch": arch},
                     desc="gdas supernet", log_every=cfg.log_every, before_step=before_step,
                     more_optimizers={"arch": a_opt}, on_epoch=on_epoch,
                     rows_in=lambda r: len(r[0]) + len(r[1]), postfix=lambda: {"H": f"{arch.entropy():.3f}"},
                     shard="rows", loss_rows=lambda r: len(r[0]))
        state = result.state
        if dist.is_main() and len(history) < state.epoch and not result.stopped:   # killed between the
            on_epoch(state.epoch - 1, state.history[-1])                            # checkpoint and on_epoch
        info = {"supernet_steps": state.global_step, "supernet_epochs": state.epoch,
                "supernet_seconds": round(state.train_seconds, 1), "supernet_history": state.history,
                "supernet_weights": n_params, "alpha_entropy": arch.entropy(), **self.processes(net, kd, arch)}
        if result.stopped:
            return dist.from_main(lambda: self.stopped(info))
        t0 = time.time()
        candidates = dist.from_main(lambda: self.derivation(net, arch, state.global_step))
        argmax = self.space.from_choices(arch.argmax())
        return dist.from_main(lambda: self.finish(candidates, {
            **info, "argmax_genotype": argmax.to_dict(), "argmax_text": self.space.describe(argmax),
            "trials": cfg.trials, "derivation_seconds_this_process": round(time.time() - t0, 1)}))

    def derivation(self, net, arch: ArchParameters, supernet_steps: int) -> list[dict]:
        """The argmax architecture, then draws from softmax(alpha) meeting the constraint, up to
        ``--trials`` distinct ones, each scored with inherited weights; replayed on resume when recorded with
        the same supernet."""
        env, cfg = self.env, self.env.cfg
        path, log = candidate_log(env)
        recorded = {r["trial"]: r for r in log}
        rng = np.random.default_rng([cfg.seed, 37])
        seen, out = set(), []
        net.eval()
        pbar = bar(cfg.trials + 1, "gdas derivation", unit="arch")
        attempts = 0
        while len(out) < cfg.trials + 1 and attempts < DRAW_ATTEMPTS * (cfg.trials + 1):
            choices = arch.argmax() if attempts == 0 else arch.draw(rng)
            attempts += 1
            g = self.space.from_choices(choices)
            k = _key(g)
            if k in seen or (out and not self.meets(self.latency(g))):
                continue
            seen.add(k)
            t = len(out)
            rec = recorded.get(t)
            if rec is not None and rec.get("supernet_steps") == supernet_steps and \
                    _key(self.space.genotype_from_dict(rec["genotype"])) == k:
                c = rec
            else:
                c = self.record(g, self.score(_PathModel(net, g)), t)
                c.update(supernet_steps=supernet_steps, argmax=t == 0,
                         alpha_logprob=arch.log_prob(self.space.choices_of(g), used_dimensions(self.space, g)))
                append_jsonl(path, c)
            out.append(c)
            pbar.update(1)
        pbar.close()
        return out
