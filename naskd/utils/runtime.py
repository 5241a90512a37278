"""Device choice and seeding (the runner moves models; models never pick a device)."""
from __future__ import annotations

import os
import random
import statistics
import time

import numpy as np
import torch

from ..errors import NaskdError


def pick_device(name: str = "auto") -> torch.device:
    """The device to train on; under torchrun, this process's (joining the process group)."""
    from . import dist

    if dist.launched():
        if name == "cuda" and not torch.cuda.is_available():
            raise NaskdError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return dist.init(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NaskdError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise NaskdError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


BF16_DEVICES = ("cuda",)       # device types whose training steps run under bf16 autocast


def mixed_precision(device):
    """The autocast context of a training step's forward and loss on ``device``: bfloat16 on the device types
    of :data:`BF16_DEVICES` (CUDA), a no-op elsewhere. Backward runs outside it (torch's AMP recipe); bf16
    keeps float32's exponent range, so no loss scaling is needed. Inference (evaluation, teacher labels,
    latency) stays float32, so that scores and cached teacher outputs do not depend on the device."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type in BF16_DEVICES)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def median_seconds(fn, repeat: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cpu_seconds() -> float:
    """Seconds of CPU time all processes have spent busy since boot (/proc/stat: user, nice, system, irq, softirq,
    steal; a hypervisor's steal counts, it slows this machine too)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_cpu_use(window: float = 0.25) -> float | None:
    """Cores' worth of CPU time that other processes used over ``window`` seconds of wall time (all processes'
    busy time from /proc/stat less this process's own, :func:`time.process_time`); None where the platform has
    no /proc/stat."""
    try:
        busy0, own0, wall0 = _cpu_seconds(), time.process_time(), time.perf_counter()
        time.sleep(window)
        busy1, own1, wall1 = _cpu_seconds(), time.process_time(), time.perf_counter()
    except (OSError, ValueError):
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def busy_cores(threads: int) -> tuple[float, int] | None:
    """(cores' worth of CPU other processes use, cores this process may run on) when that would disturb a
    timing at ``threads`` threads, else None (also where it cannot be measured). Disturbing: more than
    max(0.5, cores - threads - 0.5), i.e. on a small machine (2 cores) anything above half a core, on a larger
    one more than the cores the timing leaves free less half a core. On a small machine a second busy process
    slows a timed forward several times over and not every model alike (two vCPUs may share one physical core),
    so timings taken then are not the machine's. It samples :func:`other_cpu_use`'s short window, not the whole
    timing; in a container /proc/stat counts the whole host."""
    used = other_cpu_use()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                   # not on every platform
        cores = os.cpu_count() or 1
    if used is None:
        return None
    return (used, cores) if used > max(0.5, cores - threads - 0.5) else None
