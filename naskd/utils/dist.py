"""Data-parallel training with torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m naskd teacher|retrain ...`` (or across nodes with ``--nnodes``) starts N
processes; each joins the process group (NCCL on CUDA, gloo on CPU), takes every N-th bucketed batch,
and DistributedDataParallel averages the gradients, so one step sees N batches. When the epoch's batch
count is not a multiple of N, the last round is padded (:func:`shard`, :func:`round_weight`): every row
is trained once per epoch and that step's gradient is the mean over the batches it really holds. Rank 0
alone writes the run directory, fills the teacher cache, evaluates and checkpoints; the others wait for it.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from ..errors import NaskdError


def launched() -> bool:
    """True in a process started by torchrun with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_name: str = "auto") -> torch.device:
    """Join the process group once; return this process's device (its local GPU, or the CPU)."""
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda and local >= torch.cuda.device_count():
        # before joining: NCCL would fail later with "invalid device ordinal" on this rank alone
        n = torch.cuda.device_count()
        raise NaskdError(f"torchrun started process {local} on this node but it has {n} GPU{'s' * (n != 1)}: one "
                         f"process per GPU (--nproc_per_node {n}), or --device cpu for CPU processes (gloo)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shutdown(wait: bool = True) -> None:
    """Leave the process group before the interpreter exits: a gloo group left to the exit handlers can
    abort a rank ("terminate called without an active exception") while its threads are torn down.
    ``wait``: meet the other ranks at a barrier first (after a run that finished on every rank)."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a torchrun process with ``code`` once it has left the process group: stdio flushed, then
    ``os._exit``, skipping the interpreter's teardown, during which gloo's background threads can abort an
    already finished rank ("terminate called without an active exception", SIGABRT; seen in CI on a rank whose
    results were written). Outside torchrun, or with a non-zero code: ``sys.exit(code)``."""
    import sys

    if not launched() or code != 0:   # a failing rank exits as usual: the others have time to say their line
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (run directories, teacher caches); the others run it once it is done."""
    if world_size() > 1 and not is_main():
        dist.barrier()
    try:
        yield
    finally:
        if world_size() > 1 and is_main():
            dist.barrier()


def shard(batches: list) -> list:
    """This rank's share of an epoch's batches, padded so that every batch is trained and every rank takes
    the same number of steps.

    ``batches`` is the whole epoch's list (the same on every rank). Rank r gets batches r, r + w, r + 2w, ...
    (w processes): ``ceil(len(batches) / w)`` steps on every rank. In the last round, when fewer than w
    batches are left, a rank with none gets ``None`` there: it steps with a zero loss (see
    :func:`round_weight`) so that the gradient all-reduce still meets on every rank and no row is dropped.

    Raises :class:`NaskdError` when there are fewer batches than processes (some process would have
    nothing to train in any round): a smaller batch or fewer processes is the way out.
    """
    w = world_size()
    if w == 1:
        return batches
    n = len(batches)
    if n < w:
        rows = sum(len(b) if hasattr(b, "__len__") else 1 for b in batches)
        if rows >= w:
            way = f"--batch-size {rows // w} or smaller (so that every process gets a batch), or fewer processes"
        else:
            way = f"at most {rows} process{'es' * (rows != 1)} (torchrun --nproc_per_node), or more rows"
        raise NaskdError(f"an epoch of {rows} training row{'s' * (rows != 1)} makes {n} batch{'es' * (n != 1)}, "
                         f"fewer than the {w} data-parallel processes; use {way}")
    mine = list(batches[rank()::w])
    steps = -(-n // w)
    return mine + [None] * (steps - len(mine))


def round_weight(n_batches: int, step: int) -> float:
    """The factor on this rank's loss at ``step`` (0-based) of an epoch of ``n_batches`` batches sharded by
    :func:`shard`, such that DistributedDataParallel's gradient average is the mean over the batches
    actually trained in that round.

    DDP averages gradients over all w ranks. In a full round every factor is 1, so each step's gradient
    is the mean of w batches' mean-loss gradients, as usual. In a last round with only k < w real batches,
    the ranks holding one scale their loss by w / k and the padded ranks by 0: the step's gradient is then
    the mean of those k batches' gradients, neither diluted by the padding nor counting any row twice.
    """
    w = world_size()
    real = min(w, n_batches - step * w)
    if real <= 0:
        raise ValueError(f"step {step} is past the {n_batches} batches of the epoch")
    if rank() >= real:
        return 0.0
    return w / real


def split_rows(rows):
    """This rank's slice of one global batch (``rows``: an array of row indices, or a tuple of them such as
    darts' (weight rows, architecture rows)): rows r, r + w, r + 2w, ... of each (w processes), so that the w
    slices together are the batch one process would train. None when a slice is empty (a batch of fewer rows
    than processes): that rank then contributes nothing to the step."""
    w = world_size()
    if w == 1:
        return rows
    if isinstance(rows, tuple):
        parts = tuple(r[rank()::w] for r in rows)
        return None if any(len(p) == 0 for p in parts) else parts
    mine = rows[rank()::w]
    return None if len(mine) == 0 else mine


def mean_over_ranks(tensors: list, n_local: int) -> list:
    """The row-weighted mean over ranks of per-rank tensors: sum_r (n_r / N) t_r, where ``n_local`` is this
    rank's number of rows (0 for a rank without any) and N = sum_r n_r. With per-rank mean losses over
    row-split batches (:func:`split_rows`) this is the gradient one process would compute on the whole batch.
    One all-reduce; a collective (every rank calls it); the tensors themselves in one process."""
    if world_size() == 1:
        return list(tensors)
    if not tensors:
        return []
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    buf = torch.cat([flat * float(n_local), flat.new_tensor([float(n_local)])])
    dist.all_reduce(buf)
    total = float(buf[-1])
    out = (buf[:-1] / total) if total > 0 else buf[:-1] * 0
    res, i = [], 0
    for t in tensors:
        res.append(out[i:i + t.numel()].reshape(t.shape).to(t.dtype))
        i += t.numel()
    return res


def broadcast_modules(*modules) -> None:
    """Every tensor (parameters and buffers) of ``modules`` set to rank 0's (a collective)."""
    if world_size() == 1:
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list, row_sparse: set) -> None:
    """The mean over the ranks of ``params``' gradients, in place, sending only what some rank has: the
    gradients of parameters that received one on some rank (a spos step trains one path of the supernet: the
    others' gradients stay None, as in one process), and of the ``row_sparse`` parameters (ids of word tables)
    only the rows that are non-zero on some rank (a batch touches a few hundred of the table's rows). Dense
    results, as one process would hold them. A collective: every rank calls it after its backward (a rank
    without rows in the step, with no gradients, too). It does what DistributedDataParallel's all-reduce does,
    without sending the unused weights: on SST-2's macro supernet (20M weights, 9M of them the word table) at
    batch 32, two one-thread processes took 60 s of supernet training with DDP's full reduction (a first
    measurement) and 44 s with this one, where one two-thread process took 23 s (search_processes_sst2 table).
    The bookkeeping tensors live on the parameters' device (NCCL reduces CUDA tensors only)."""
    w = world_size()
    if w == 1:
        return
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=dev)
    local_rows = {}
    for i, p in enumerate(params):
        if id(p) in row_sparse and p.grad is not None:
            local_rows[i] = torch.nonzero(p.grad.reshape(p.shape[0], -1).abs().sum(1)).reshape(-1)
    sparse_idx = [i for i, p in enumerate(params) if id(p) in row_sparse]
    counts = torch.tensor([len(local_rows.get(i, ())) for i in sparse_idx], dtype=torch.int64, device=dev)
    head = torch.cat([has.long(), counts])
    dist.all_reduce(head, op=dist.ReduceOp.MAX)
    union = head[: len(params)].bool().tolist()
    max_counts = head[len(params):].tolist()
    # the rows each row-sparse parameter sends: the union over ranks (all_gather of padded index lists)
    rows = {}
    if sparse_idx:
        pad = torch.full((sum(max_counts),), -1, dtype=torch.int64, device=dev)
        at = 0
        for i, m in zip(sparse_idx, max_counts):
            r = local_rows.get(i, torch.empty(0, dtype=torch.int64, device=dev))
            pad[at:at + len(r)] = r
            at += m
        gathered = [torch.empty_like(pad) for _ in range(w)]
        dist.all_gather(gathered, pad)
        every = torch.stack(gathered)
        at = 0
        for i, m in zip(sparse_idx, max_counts):
            ids = every[:, at:at + m].reshape(-1)
            rows[i] = torch.unique(ids[ids >= 0])
            at += m
    pieces, slots = [], []
    for i, p in enumerate(params):
        if not union[i]:
            continue
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        if i in rows:
            piece = g.reshape(p.shape[0], -1)[rows[i]]
        else:
            piece = g
        pieces.append(piece.reshape(-1))
        slots.append(i)
    if not pieces:
        return
    flat = torch.cat(pieces)
    dist.all_reduce(flat)
    flat /= w
    at = 0
    for i in slots:
        p = params[i]
        if i in rows:
            n = len(rows[i]) * (p.numel() // p.shape[0])
            g = p.grad.zero_() if p.grad is not None else torch.zeros_like(p)
            g.reshape(p.shape[0], -1)[rows[i]] = flat[at:at + n].reshape(len(rows[i]), -1).to(g.dtype)
        else:
            n = p.numel()
            g = flat[at:at + n].reshape(p.shape).clone().to(p.dtype)
        p.grad = g
        at += n


def from_main(fn):
    """``fn()`` run on rank 0 alone, its (picklable) result given to every rank; a :class:`NaskdError` raised
    there is raised on every rank with the same message (so that all of them stop with one clear line).
    For work whose result must be the same everywhere but cannot be computed alike on every rank (timings,
    a discrete search that reads them, files written once)."""
    if world_size() == 1:
        return fn()
    box = [None]
    if is_main():                     # (the other ranks may pass None for fn: it is not called there)
        try:
            box[0] = ("ok", fn())
        except NaskdError as e:
            box[0] = ("error", str(e))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise NaskdError(value)
    return value


def digest(*modules) -> str:
    """A hash of every tensor (parameters and buffers) of ``modules``, in order: equal digests, equal copies."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        for name, t in m.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                     else t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def agree(digest: str) -> bool:
    """Whether every rank holds the same ``digest`` (a collective)."""
    if world_size() == 1:
        return True
    all_ = [None] * world_size()
    dist.all_gather_object(all_, digest)
    return len(set(all_)) == 1


def all_sum(value: int, device) -> int:
    """The sum of an integer over all ranks (a collective: every rank calls it); the value itself alone."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def run_directory(out, **guard):
    """The run directory, prepared by rank 0 alone (:func:`naskd.utils.rundir.prepare_run_dir`, whose
    keyword arguments ``guard`` are: command, overwrite, resume, reads, settings)."""
    from pathlib import Path

    from .rundir import prepare_run_dir

    with main_first():
        if is_main():
            return prepare_run_dir(out, **guard)
    return Path(out)


def say(*args, **kw) -> None:
    """print(), on rank 0 only."""
    if is_main():
        print(*args, **kw)
