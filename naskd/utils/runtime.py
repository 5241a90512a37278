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


def busy_load(threads: int) -> tuple[float, int] | None:
    """(1-minute load average, cores) when other processes keep the cores busy while this one times at
    ``threads`` threads, else None (also where the platform has no load average). Times measured on a busy
    machine are not the machine's: a thread waiting for a busy core makes a forward several times slower, and
    not every model alike. This process itself counts about 1 in the load, hence the 1.5 allowed above the
    cores the timing leaves free."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = os.cpu_count() or 1
    return (load, cores) if load > cores - threads + 1.5 else None
