"""The one training loop that teacher fine-tuning and student retraining share.

It owns checkpointing and resume: every ``checkpoint_every`` steps and at each epoch end it saves the
model, optimiser, scheduler, extra stateful modules (criterion projections, memories), torch RNG states
and the position in the epoch. Batch order is a pure function of (seed, epoch), so a resumed run replays
the same batches with the same dropout masks as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import NaskdError
from .records import Progress
from .utils import dist
from .utils.io import append_jsonl, save_torch
from .utils.progress import bar
from .utils.runtime import mixed_precision, to_device

CHECKPOINT = "checkpoint.pt"


@dataclass
class LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float | None = None
    best_epoch: int = -1
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    rows_in_epoch: int = 0          # rows trained so far in the current epoch, over all processes
    rows_per_epoch: list = field(default_factory=list)     # rows trained in each finished epoch
    processes: int = 1              # data-parallel processes that trained it (a resume must use as many)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FitResult:
    state: LoopState
    stopped: bool           # ended early by stop_after_steps
    best_metrics: dict
    steps_here: int = 0     # steps this call trained (a resumed run's earlier steps not counted)
    ended_early: bool = False   # on_epoch returned a true value (a pruned trial)


def adamw(params, **kw) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it has one for the parameters' device (CPU since torch 2.4, CUDA):
    one pass over each tensor instead of a dozen small ops. On the width-64 SST-2 student the optimizer step
    fell from 31 to 5 ms (its 2M-entry embedding table dominates), a training step from 150 to 123 ms
    (study optimizer_step of benchmarks/). Same update as the default implementation up to float rounding
    (tests/test_train.py); a checkpoint written unfused resumes unfused (the optimizer's saved settings win),
    so a run keeps its trajectory."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):      # an older torch, or a device without the kernel
        return torch.optim.AdamW(params, **kw)


def cosine_schedule(optimizer, total_steps: int):
    """The learning rate times 0.5 * (1 + cos(pi * min(s, T) / T)) at step s of T = ``total_steps``:
    cosine decay to zero (Loshchilov & Hutter 2017, without restarts), as the search supernets train."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    if "per_rank" in st:                  # saved by a torchrun job: each process gets its own stream back
        mine = st["per_rank"]
        st = mine[dist.rank()] if len(mine) == dist.world_size() else mine[0]
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def gathered_rng_state() -> dict:
    """This process's RNG state, or under torchrun every process's (a collective: all ranks call it)."""
    if dist.world_size() == 1:
        return _rng_state()
    states = [None] * dist.world_size()
    torch.distributed.all_gather_object(states, _rng_state())
    return {"per_rank": states}


def save_checkpoint(path: Path, *, modules: dict, optimizers: dict, schedulers: dict, state,
                    rng: dict | None = None) -> None:
    """Everything a run needs to continue exactly: module and optimiser states, RNG, loop position."""
    save_torch(path, {
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items() if s is not None},
        "rng": rng if rng is not None else _rng_state(),
        "loop": state.to_dict(),
    })


def load_checkpoint(path: Path, *, modules: dict, optimizers: dict, schedulers: dict) -> dict:
    """Restore in place; return the saved loop-state dict.

    Raises :class:`NaskdError` when ``path`` is missing, unreadable (truncated, corrupt, not a torch file,
    or holding anything but tensors and plain containers: it is never unpickled beyond that), not a
    checkpoint of the shared loop, or saved by a run whose modules differ from these."""
    if not path.is_file():
        raise NaskdError(f"nothing to resume: {path} does not exist (the run never reached a checkpoint); "
                         "start it again with --overwrite")
    again = "start the run again with --overwrite (its checkpoint cannot be resumed)"
    try:
        with warnings.catch_warnings():     # torch's chatter about a foreign file's pickle protocol
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  truncated zip, garbage, a refused pickle: torch raises many kinds
        # torch's own message may advise weights_only=False, which would run arbitrary code: not repeated
        raise NaskdError(f"checkpoint {path} cannot be read ({type(e).__name__}: the file is truncated, corrupt "
                         f"or holds more than tensors, which naskd never unpickles); {again}") from None
    keys = ("modules", "optimizers", "schedulers", "rng", "loop")
    if not isinstance(ck, dict) or any(k not in ck for k in keys):
        raise NaskdError(f"checkpoint {path} is not a naskd training checkpoint (it lacks "
                         f"{', '.join(k for k in keys if not isinstance(ck, dict) or k not in ck)}); {again}")
    try:
        for k, m in modules.items():
            if k in ck["modules"]:
                m.load_state_dict(ck["modules"][k])
        for k, o in optimizers.items():
            o.load_state_dict(ck["optimizers"][k])
        for k, s in schedulers.items():
            if s is not None and k in ck["schedulers"]:
                s.load_state_dict(ck["schedulers"][k])
        _set_rng_state(ck["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        # load_state_dict's message is a heading line, then the keys that differ: both, cut short
        what = " ".join(ln.strip() for ln in str(e).strip().splitlines()[:2]) or type(e).__name__
        raise NaskdError(f"checkpoint {path} does not fit this run ({what[:200]}); resume with the settings it "
                         f"was saved with, or {again}") from None
    return ck["loop"]


def weight_average(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights (and buffers), torch's own AveragedModel:
    ``avg <- decay * avg + (1 - decay) * w`` after every step, the first step copying ``w``."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@contextlib.contextmanager
def weights_of(model: torch.nn.Module, source: torch.nn.Module):
    """Inside the block ``model`` holds ``source``'s weights; its own are put back after."""
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(source.state_dict())
    try:
        yield model
    finally:
        model.load_state_dict(own)


class _Trainable(torch.nn.Module):
    """The modules that train, with ``loss_fn(batch, progress) -> (loss, logs)`` as their forward (for DDP)."""

    def __init__(self, parts: dict, loss_fn: Callable):
        super().__init__()
        self.parts = torch.nn.ModuleDict(parts)
        self.loss_fn = loss_fn

    def forward(self, batch, progress=None):
        if batch is None:
            # a padded step (utils.dist.shard): a zero loss that reaches every trainable parameter, so that
            # this rank joins the gradient all-reduce with zeros; no data, no random draws, no state updates
            zero = sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
            return zero, {}
        return self.loss_fn(batch, progress)


def fit(*, model: torch.nn.Module, optimizer, scheduler, epochs: int,
        batches_for_epoch: Callable[[int], list], make_batch: Callable, loss_fn: Callable,
        evaluate: Callable[[], dict], main_metric: str, run_dir: Path, device: torch.device,
        higher_is_better: bool = True, on_best: Callable[[dict], None] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        resume: bool = False, stop_after_steps: int | None = None, checkpoint_every: int = 0,
        grad_clip: float | None = 1.0, extra: dict | None = None, desc: str = "train",
        log_every: int = 50, ema_decay: float | None = None, before_step: Callable | None = None,
        more_optimizers: dict | None = None, more_schedulers: dict | None = None,
        rows_in: Callable = len, postfix: Callable[[], dict] | None = None, keep: str = "best",
        shard: str = "batches", loss_rows: Callable = len) -> FitResult:
    """Train ``model``; evaluate each epoch; call ``on_best`` when ``main_metric`` improves.

    ``loss_fn(batch, progress) -> (loss, logs)`` runs the forward pass (``progress``: a
    :class:`naskd.records.Progress`); ``make_batch(rows)`` collates a batch of row indices. Logs go to
    ``run_dir/log.jsonl``.

    Under torchrun (w processes), ``shard="batches"`` (teacher, retrain): an epoch of n batches takes
    ``ceil(n / w)`` steps on every rank, each rank a whole batch: every batch is trained exactly once, and a
    last round with k < w batches averages the gradient over those k (:func:`naskd.utils.dist.round_weight`).
    Fewer batches than processes raise :class:`NaskdError`. ``shard="rows"`` (search): every step's batch is
    split across the ranks (:func:`naskd.utils.dist.split_rows`) and each rank's loss weighted by its share of
    the batch's rows (``loss_rows(rows)`` counts the rows its loss averages over), the gradients averaged by
    :func:`naskd.utils.dist.average_gradients` (only those some rank has, word tables by rows), so that the
    averaged gradient is the one a single process computes on the whole batch: the same steps and trajectory
    as one process, up to float rounding, for criteria that are means over rows; ``before_step`` is then
    called on every rank,
    with ``None`` where a rank's slice is empty (it must still join the collectives of its step).
    ``state.rows_per_epoch`` counts the rows trained in each epoch over all processes. A run is resumed by as
    many processes as trained it (:class:`NaskdError` otherwise: another count would not continue it exactly).

    With ``ema_decay`` an exponential moving average of the weights is kept: ``evaluate`` and ``on_best``
    see the averaged weights (what is scored is what is saved), the raw weights' scores are recorded beside
    them as ``raw_<metric>``, and training goes on from the raw weights.

    ``on_epoch(epoch, metrics)`` runs on rank 0 after each epoch's checkpoint; when it returns a true value the
    training ends there on every rank (``FitResult.ended_early``; Hyperband's pruning).

    ``keep="last"`` makes every epoch the kept one (``on_best`` after each, ``best_metrics`` the last
    epoch's): the weights are then not chosen on what ``evaluate`` scores, so its score is an honest
    estimate when it is the reported split.

    A search strategy plugs its own step in here and the loop does the rest (checkpoints, resume, NaN
    checks, logging, progress, ``stop_after_steps``): ``before_step(batch, progress)`` runs before the
    weight step's forward (DARTS' architecture update; its logs join the step's), ``more_optimizers`` /
    ``more_schedulers`` are checkpointed beside the main ones (the architecture optimiser),
    ``rows_in(rows)`` counts the rows of one batch of ``batches_for_epoch``, and ``postfix()`` adds
    values to the progress bar. ``progress`` (epoch, epochs, global step, fraction done) is the same for a
    resumed run at the same step, so a strategy's random choices can be a function of it.
    """
    run_dir = Path(run_dir)
    extra = extra or {}
    ck_path = run_dir / CHECKPOINT
    step_fn = loss_fn
    reduce_by_hand = dist.world_size() > 1 and shard == "rows"
    if reduce_by_hand:
        # the weights' gradients averaged after each backward (dist.average_gradients): only those some rank
        # has (a spos path's), and of the word tables only the rows a batch touched
        trainables = [p for m in (model, *extra.values()) for p in m.parameters() if p.requires_grad]
        row_sparse = {id(mod.weight) for m in (model, *extra.values()) for mod in m.modules()
                      if isinstance(mod, torch.nn.Embedding) and mod.weight.requires_grad}
    elif dist.world_size() > 1:
        # DistributedDataParallel over everything that trains (the model and the criteria's projections):
        # the forward goes through the wrapper so that backward averages the gradients across ranks
        from torch.nn.parallel import DistributedDataParallel

        trainable = _Trainable({"model": model, **extra}, loss_fn)
        ddp = DistributedDataParallel(trainable, find_unused_parameters=True,
                                      device_ids=[device.index] if device.type == "cuda" else None)
        step_fn = ddp
    if shard not in ("batches", "rows"):
        raise ValueError(f"shard must be 'batches' or 'rows', got {shard!r}")
    state = LoopState(processes=dist.world_size())
    modules = {"model": model, **extra}
    averaged = weight_average(model, ema_decay) if ema_decay else None
    if averaged is not None:
        modules["ema"] = averaged
    ck = dict(modules=modules, optimizers={"main": optimizer, **(more_optimizers or {})},
              schedulers={"main": scheduler, **(more_schedulers or {})})
    if resume:
        state = LoopState(**load_checkpoint(ck_path, **ck))
        if state.processes != dist.world_size():
            n = state.processes
            raise NaskdError(f"{run_dir} was trained by {n} process{'es' * (n != 1)}; resume it with as many ("
                             + (f"torchrun --nproc_per_node {n} ...)" if n > 1 else "without torchrun)")
                             + f", not {dist.world_size()}: another count would not continue it exactly")
        where = (f"epoch {state.epoch + 1} of {epochs}, step {state.step_in_epoch} in it" if state.epoch < epochs
                 else f"its {epochs} epochs already trained")
        dist.say(f"[{desc}] resumed from {ck_path.name} at step {state.global_step} ({where}; "
                 f"{state.train_seconds / 60:.1f} min trained before)", flush=True)
    if reduce_by_hand:                    # every rank starts from rank 0's weights (as DDP makes them)
        dist.broadcast_modules(model, *extra.values())
    log_path = run_dir / "log.jsonl"
    best_metrics = state.history[state.best_epoch] if state.best_epoch >= 0 else {}
    steps_done_here = 0
    while state.epoch < epochs:
        epoch_batches = batches_for_epoch(state.epoch)
        # None where this rank pads the last round ("batches"); the global batches, split per step ("rows")
        batches = dist.shard(epoch_batches) if shard == "batches" else epoch_batches
        rows_here = 0                               # rows this process trained since the last count
        model.train()
        for m in extra.values():
            m.train()
        pbar = bar(len(batches), f"{desc} epoch {state.epoch + 1}/{epochs}", initial=state.step_in_epoch)
        ema = None
        t0 = time.perf_counter()
        while state.step_in_epoch < len(batches):
            rows = batches[state.step_in_epoch]
            if dist.world_size() == 1:
                weight = 1.0
            elif shard == "batches":
                weight = dist.round_weight(len(epoch_batches), state.step_in_epoch)
            else:                                   # this rank's slice, its loss weighted by its share of rows
                whole, rows = rows, dist.split_rows(rows)
                weight = dist.world_size() * (loss_rows(rows) if rows is not None else 0) / loss_rows(whole)
            # where training stands, for criteria with schedules (structured KD's lambda) and strategies' draws
            progress = Progress(epoch=state.epoch, epochs=epochs, step=state.global_step,
                                fraction=(state.epoch * len(batches) + state.step_in_epoch) / (epochs * len(batches)))
            if rows is None:                        # padding: nothing left for this rank in the last round
                batch = None
            else:
                batch = to_device(make_batch(rows), device)
                rows_here += rows_in(rows) if hasattr(rows, "__len__") else 1      # a batch of one row index
            # before_step (an architecture step) opens its own autocast around its forwards only: its weights
            # move in place between them (darts order 2), and autocast's cache of bf16 weight copies is kept
            # until the outermost context ends; its backward (autograd.grad) must run outside it too
            before = (before_step(batch, progress)
                      if before_step is not None and (batch is not None or shard == "rows") else None)
            if batch is None and reduce_by_hand:    # nothing to train here: this rank only joins the reduction
                loss, logs = torch.zeros((), device=device), {}
            else:
                with mixed_precision(device):       # bf16 autocast on CUDA; the backward below runs outside it
                    loss, logs = step_fn(batch, progress)
            if before:
                logs = {**before, **logs}
            if not torch.isfinite(loss):
                pbar.close()
                raise NaskdError(
                    f"loss became {loss.item()} at epoch {state.epoch + 1}, step {state.step_in_epoch + 1}; "
                    "lower the learning rate (--lr) or check the inputs; the last checkpoint is kept"
                )
            optimizer.zero_grad(set_to_none=True)
            if not (batch is None and reduce_by_hand):
                (loss if weight == 1.0 else loss * weight).backward()
            if reduce_by_hand:
                dist.average_gradients(trainables, row_sparse)
            if grad_clip:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for sched in (more_schedulers or {}).values():
                sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            state.step_in_epoch += 1
            state.global_step += 1
            steps_done_here += 1
            lv = loss.item()
            ema = lv if ema is None else 0.98 * ema + 0.02 * lv
            pbar.update(1)
            pbar.set_postfix(loss=f"{ema:.4f}", **(postfix() if postfix is not None else {}), refresh=False)
            if state.global_step % log_every == 0 and dist.is_main():
                append_jsonl(log_path, {"epoch": state.epoch, "step": state.global_step, "loss": lv,
                                        "lr": optimizer.param_groups[0]["lr"],
                                        **{k: float(v) for k, v in logs.items()}})
            stop = stop_after_steps is not None and steps_done_here >= stop_after_steps
            if stop or (checkpoint_every and state.global_step % checkpoint_every == 0):
                state.train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                state.rows_in_epoch += dist.all_sum(rows_here, device)
                rows_here = 0
                rng = gathered_rng_state()
                if dist.is_main():
                    save_checkpoint(ck_path, state=state, rng=rng, **ck)
                dist.barrier()
            if stop:
                pbar.close()
                return FitResult(state, True, best_metrics, steps_done_here)
        pbar.close()
        state.train_seconds += time.perf_counter() - t0
        state.rows_per_epoch.append(state.rows_in_epoch + dist.all_sum(rows_here, device))
        state.rows_in_epoch = 0
        rng = gathered_rng_state()        # before evaluation draws anything
        if not dist.is_main():            # rank 0 evaluates, keeps the best and checkpoints
            state.epoch += 1
            state.step_in_epoch = 0
            dist.barrier()
            if on_epoch is not None and dist.from_main(None):      # rank 0's on_epoch ended the training
                return FitResult(state, False, best_metrics, steps_done_here, ended_early=True)
            continue
        with contextlib.ExitStack() as scope:
            if averaged is not None:
                raw = evaluate()
                scope.enter_context(weights_of(model, averaged.module))
            metrics = evaluate()
            if averaged is not None:
                metrics.update({f"raw_{k}": v for k, v in raw.items()})
            metrics["epoch"] = state.epoch
            state.history.append(metrics)
            value = metrics[main_metric]
            improved = (keep == "last" or state.best is None
                        or (value > state.best if higher_is_better else value < state.best))
            if improved and not math.isnan(value):
                state.best, state.best_epoch, best_metrics = value, state.epoch, metrics
                if on_best is not None:
                    on_best(metrics)
        append_jsonl(log_path, {"epoch": state.epoch, "eval": metrics, "best": state.best})
        print(f"[{desc}] epoch {state.epoch + 1}/{epochs}: " +
              ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)) +
              (f" (best {main_metric}={state.best:.4f} at epoch {state.best_epoch + 1})" if keep == "best" else
               " (the last epoch is kept)"), flush=True)
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint(ck_path, state=state, rng=rng if dist.world_size() > 1 else None, **ck)
        dist.barrier()
        if on_epoch is not None:          # after the checkpoint: a caller may stop here (tuning prunes)
            # a true value ends the training on every rank (Hyperband's pruning); an exception, this process
            if dist.from_main(lambda: bool(on_epoch(state.epoch - 1, metrics))):
                return FitResult(state, False, best_metrics, steps_done_here, ended_early=True)
    return FitResult(state, False, best_metrics, steps_done_here)
