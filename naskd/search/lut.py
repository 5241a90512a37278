"""Measured CPU latency as a search objective: a latency lookup table of a space's parts.

A one-shot space splits every student into parts (:meth:`naskd.space.oneshot.OneShotSpace.latency_parts`:
an input part such as the embeddings, layers, a head), each named by a key that fixes its configuration,
with a count. The table holds the measured forward time of each part key in each setting, and a
student's time is predicted as the sum over its parts of count x time, without building or timing the
student. This is the latency lookup table of FBNet (Wu et al. 2019, "FBNet: Hardware-Aware Efficient
ConvNet Design via Differentiable Neural Architecture Search") and the measured per-layer latency of HAT
(Wang et al. 2020, "HAT: Hardware-Aware Transformers for Efficient Natural Language Processing"), for
CPU inference of NLP students.

Settings. A time is kept per ``(part key, threads, batch, length)``: threads in (1, 2) (those the machine
has), batch 1 (one request; the time is ms per sentence) and batch 128 (a throughput batch; ms per batch
of 128 sentences), and a few token lengths standing for the task's length distribution
(:func:`representative_lengths`: the midpoints of its terciles, so the mean time over them estimates the
mean time over the task's sentences). A prediction averages over those lengths.

Protocol. Every entry is the fastest of repeated forwards in eval mode under ``torch.no_grad()``, under
``torch.set_num_threads(threads)`` (the caller's setting restored after), on random but seeded inputs with
every mask position true: an input part gets ``input_ids`` (B, L) int64 and ``attention_mask`` (B, L)
bool, any other part ``x`` (B, L, width) float32 and ``mask`` (B, L) bool. The parts of a setting are
timed in turns (:func:`time_round`: warm-up rounds first, then rounds in which every part runs once, each
call timed alone; at least ``MIN_REPEAT`` rounds, more until ``BUDGET_S`` seconds have gone, at most
``MAX_REPEAT``), so that each part runs between others as it does in a model. The fastest call, not the
median: on a shared machine interference only ever adds time, so the minimum is the repeatable estimate
(the advice of Python's ``timeit``); measured on the 2-core VM (the same 20 macro students timed whole in
two passes, lanes paused), the two passes agreed within 15% for 95% of them at one thread and batch 1 by
the minimum against 80% by the median, 65% against 40% at two threads (batch 128: 100% either way at one
thread, 80% against 60% at two). A whole model
(:meth:`LatencyLUT.measure_model`, the teacher in :meth:`LatencyLUT.teacher_ms`) is timed by the same
protocol, alone, on ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for sentence-pair tasks,
``word_starts``/``word_mask`` for tagging).

Cache. The table of a machine lives in ``<cache_dir>/latency/<machine_id>.json`` (cache_dir:
``$NASKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/naskd`` or ``~/.cache/naskd``), rewritten atomically after
each setting's measurements, so a second search on the same machine measures nothing. The machine key is
the CPU model, the logical core count, the torch version and the table's format number: a table made
under another key is refused (:meth:`LatencyLUT.load`), since its times say nothing about this machine.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from ..errors import NaskdError

LUT_FORMAT = 2               # 2: the fastest of the timed forwards (1: their median)
LUT_KIND = "naskd latency lookup table"
THREADS = (1, 2)              # torch threads measured (only those the machine has)
BATCHES = (1, 128)            # batch 1: ms per sentence; batch 128: ms per batch of 128
WARMUP = 3                    # untimed forwards before each entry
MIN_REPEAT = 7                # timed forwards per entry, at least...
MAX_REPEAT = 100              # ...and at most,
BUDGET_S = 0.4                # taking more until this many seconds have gone
TEACHER_PREFIX = "teacher:"   # the key of a teacher's whole-model entry: teacher:<fingerprint>
OVERHEAD_PREFIX = "overhead:"  # a space's per-part overhead (calibrated), overhead:<space name>
REFERENCE_PREFIX = "reference:"  # the calibration students' summed whole time: reference:<overhead key>
DRIFT_TOLERANCE = 0.05        # a machine this much faster or slower than its table rescales the table
CALIBRATION_MODELS = 6        # whole students timed to calibrate a space's per-part overhead
CALIBRATION_SEED = 10_007     # their draw: a stream apart from any seed a search or benchmark samples with
AGAIN = "measure again: leave out --latency-table"

Key = tuple  # (part key, threads, batch, length)


# --- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's ``model name``; elsewhere what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key() -> dict:
    """What a table's times depend on: ``{"cpu", "cores" (logical), "torch" (version), "format"}``."""
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 1, "torch": torch.__version__, "format": LUT_FORMAT}


def machine_id(key: dict | None = None) -> str:
    """A short hash (12 hex digits) of :func:`machine_key` (or of ``key``): the cache file's name."""
    key = machine_key() if key is None else key
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def describe_machine(key: dict) -> str:
    return (f"{key.get('cpu')}, {key.get('cores')} cores, torch {key.get('torch')}, "
            f"LUT format {key.get('format')}")


def whole_model_setting(threads: int, batch: int) -> bool:
    """True where a search measures each candidate whole rather than summing the table: batch 1, at any
    number of threads. There a forward takes well under a millisecond on a small student and per-call work
    (dispatch, a waking thread pool) is a large, architecture-dependent share of it, so the sum of parts
    misses the 15% target too often (benchmarks/results/lut_accuracy_macro.md: 50% of 20 students within 15%
    at one thread and at two, where a whole student's 2-thread gain ranges from 0.62x to 1.40x its 1-thread
    time by architecture), while a whole student measured twice agrees within 15% on 90% of them at one
    thread (65% at two on the 2-core VM), at about a quarter of a second per candidate on this CPU. At batch
    128 the per-call work is amortised and the table predicts (95% within 15% at one thread, 80% at two, where
    the same student measured twice agrees for 100% and 90%)."""
    del threads
    return int(batch) == 1


def machine_threads(cores: int | None = None) -> tuple[int, ...]:
    """The thread counts of :data:`THREADS` the machine has (``cores`` logical cores; this one's if None)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    return tuple(t for t in THREADS if t <= cores) or (1,)


def default_lut_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/latency/<machine_id>.json``, cache_dir resolved as the teacher-output cache does."""
    from ..utils.cachedir import default_cache_dir

    return default_cache_dir(cache_dir) / "latency" / f"{machine_id()}.json"


def representative_lengths(dev_lengths, n: int = 3) -> list[int]:
    """``n`` token lengths standing for the distribution ``dev_lengths`` (one per sentence): the lengths
    at the quantiles (2i+1)/(2n), i = 0..n-1 (for n = 3: 1/6, 1/2, 5/6, the midpoints of the terciles),
    so the mean of a time over them estimates its mean over the distribution. Each is a length that
    occurs (the inverted-CDF quantile)."""
    import numpy as np

    lengths = np.asarray(list(dev_lengths), dtype=np.int64)
    if lengths.size == 0:
        raise NaskdError("representative lengths of an empty split: it has no sentences")
    if n < 1:
        raise NaskdError(f"the number of representative lengths must be at least 1, got {n}")
    qs = [(2 * i + 1) / (2 * n) for i in range(n)]
    return [int(v) for v in np.quantile(lengths, qs, method="inverted_cdf")]


# --- timing ----------------------------------------------------------------------------------------
def time_round(fns, *, warmup: int = WARMUP, min_repeat: int = MIN_REPEAT, max_repeat: int = MAX_REPEAT,
               budget_s: float = BUDGET_S) -> list[float]:
    """Milliseconds of the fastest call of each of ``fns``, timed in turns: ``warmup`` untimed rounds, then
    rounds that call every fn once, in order, each call timed alone: at least ``min_repeat`` rounds, more
    until ``budget_s`` seconds have gone, at most ``max_repeat``; all under ``torch.no_grad()``.

    Turns, not each fn repeated on its own: a small module called over and over keeps its weights and
    buffers in the caches and its branches predicted, which a whole model running it between others does
    not (on the cell space, parts timed alone summed to 20% less than the model at batch 1; timed in
    turns, to what the model takes)."""
    fns = list(fns)
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns:
                fn()
        times: list[list[float]] = [[] for _ in fns]
        start = time.perf_counter()
        rounds = 0
        while rounds < max_repeat and (rounds < min_repeat or time.perf_counter() - start < budget_s):
            for i, fn in enumerate(fns):
                t = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t)
            rounds += 1
    return [1e3 * min(ts) for ts in times]


def time_ms(fn, **kw) -> float:
    """Milliseconds of the fastest call of ``fn()`` (:func:`time_round` of it alone)."""
    return time_round([fn], **kw)[0]


def overhead_key(space, ctx) -> str:
    """``overhead:<space name>:<hash>``: the calibration of one space as the task and teacher shape it (its
    declared choices, layers and width, the task's kind, labels and pairing, the teacher's depth), so two
    spaces that share a name (or one space at two widths) never share an overhead."""
    try:
        declared = space.to_dict()
    except NotImplementedError:
        declared = {"name": space.name}
    what = json.dumps([declared, ctx.kind, ctx.num_labels, bool(ctx.pair), ctx.teacher_layers, ctx.vocab_size],
                      sort_keys=True, default=str)
    return f"{OVERHEAD_PREFIX}{space.name}:{hashlib.sha256(what.encode()).hexdigest()[:10]}"


def warn_if_busy(threads: int) -> bool:
    """Warn (one line) when other processes keep the cores busy: times measured then are not this
    machine's (a thread waiting for a busy core makes a 2-thread forward many times slower), and they
    stay in the table. True when it warned."""
    import warnings

    from ..utils.runtime import busy_cores

    busy = busy_cores(threads)
    if busy is None:
        return False
    used, cores = busy
    warnings.warn(f"the machine is busy (other processes use {used:.1f} of its {cores} cores) while latency is "
                  f"measured at {threads} thread{'s' if threads > 1 else ''}: the times kept in the table will be "
                  "too slow; "
                  "measure on a quiet machine (delete the table under <cache dir>/latency/ to measure again)")
    return True


class _threads:
    """``torch.set_num_threads(n)`` inside, the caller's count restored after (whatever happened)."""

    def __init__(self, n: int):
        self.n = int(n)

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _ids(ctx, batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(batch, length) int64 token ids drawn from the vocabulary, past the first few (special) ids."""
    low = min(5, max(0, ctx.vocab_size - 1))
    return torch.randint(low, ctx.vocab_size, (batch, length), generator=g)


def part_inputs(ctx, input_width: int, batch: int, length: int) -> tuple:
    """The seeded inputs a part is timed on: ``(input_ids (B, L) int64, attention_mask (B, L) bool)`` for
    an input part (``input_width`` 0), else ``(x (B, L, input_width) float32, mask (B, L) bool)``."""
    g = _generator()
    mask = torch.ones(batch, length, dtype=torch.bool)
    if int(input_width) == 0:
        return _ids(ctx, batch, length, g), mask
    return torch.randn(batch, length, int(input_width), generator=g), mask


def model_inputs(ctx, batch: int, length: int) -> dict:
    """The seeded inputs a whole model is timed on, as ``collate`` names them: ``input_ids`` (B, L),
    ``attention_mask`` (B, L) bool all true, ``token_type_ids`` (B, L) for pair tasks (the second half of
    the tokens the second sentence), ``word_starts``/``word_mask`` (B, L) for tagging (every token a word)."""
    from ..data.tasks import TAGGING

    g = _generator()
    feeds = {"input_ids": _ids(ctx, batch, length, g),
             "attention_mask": torch.ones(batch, length, dtype=torch.bool)}
    if ctx.pair:
        tt = torch.zeros(batch, length, dtype=torch.long)
        tt[:, length // 2:] = 1
        feeds["token_type_ids"] = tt
    if ctx.kind == TAGGING:
        feeds["word_starts"] = torch.arange(length).expand(batch, length).contiguous()
        feeds["word_mask"] = torch.ones(batch, length, dtype=torch.bool)
    return feeds


def _check_lengths(lengths) -> list[int]:
    out = [int(v) for v in lengths]
    if not out or any(v < 1 for v in out):
        raise NaskdError(f"latency lengths must be one or more positive token counts, got {list(lengths)}")
    return out


# --- the table -------------------------------------------------------------------------------------
class LatencyLUT:
    """Measured forward milliseconds per ``(part key, threads, batch, length)`` on one machine.

    ``entries`` maps ``(key: str, threads: int, batch: int, length: int)`` to ms: at batch 1 the time of one
    sentence of ``length`` tokens, at batch 128 of a batch of 128 such sentences. ``path``, when set, is
    where measurements are saved as they are made (the machine's cache file for :meth:`open`)."""

    def __init__(self, entries: dict | None = None, *, machine: dict | None = None, path=None):
        self.machine = dict(machine_key() if machine is None else machine)
        self.entries: dict[Key, float] = dict(entries or {})
        self.path = None if path is None else Path(path)
        self.measured = 0                    # entries this object has measured (for reports and tests)
        self._teacher = None                 # (fingerprint, model): the last teacher timed
        self.scale: dict[tuple[int, int], float] = {}   # (threads, batch) -> drift factor (see drift)
        self._fresh: set = set()             # (space key, threads, batch) calibrated by this object

    # --- files ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path=None, *, cache_dir=None) -> LatencyLUT:
        """The table to search with: the file ``path`` (a ``--latency-table``; it must exist and be this
        machine's), or else this machine's cache file (empty when there is none yet). New measurements are
        saved to it."""
        if path is not None:
            lut = cls.load(path)
            lut.path = Path(path)
            return lut
        p = default_lut_path(cache_dir)
        if not p.is_file():
            return cls(path=p)
        lut = cls.load(p, way_out=f"delete {p} (it is measured again)")
        lut.path = p
        return lut

    @classmethod
    def load(cls, path, *, way_out: str = AGAIN) -> LatencyLUT:
        """The table in ``path``. NaskdError (naming the file) when it does not exist, is not a table, has
        malformed entries or times that are not finite and >= 0, or was measured on another machine or
        torch version (naming both, and ``way_out``)."""
        from ..utils.io import read_json

        d = read_json(path, missing=f"latency table {path} does not exist; {way_out}", way_out=way_out)
        return cls.from_dict(d, str(path), way_out=way_out)

    @classmethod
    def from_dict(cls, d, source: str = "latency table", *, way_out: str = AGAIN) -> LatencyLUT:
        if not isinstance(d, dict) or d.get("kind") != LUT_KIND or not isinstance(d.get("machine"), dict):
            raise NaskdError(f"{source} is not a naskd latency lookup table (no \"kind\": \"{LUT_KIND}\" with "
                             f"its \"machine\"); {way_out}")
        ours, theirs = machine_key(), d["machine"]
        if {k: theirs.get(k) for k in ours} != ours:
            raise NaskdError(f"latency table {source} was measured on {describe_machine(theirs)}, and this is "
                             f"{describe_machine(ours)}; {way_out}")
        entries = d.get("entries")
        if not isinstance(entries, list):
            raise NaskdError(f"{source}: \"entries\" must be a list of {{part, threads, batch, length, ms}}; "
                             f"{way_out}")
        out: dict[Key, float] = {}
        for i, e in enumerate(entries):
            try:
                if not isinstance(e, dict) or not isinstance(e["part"], str):
                    raise TypeError("not {part: str, ...}")
                ints = [e[k] for k in ("threads", "batch", "length")]
                if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ints):
                    raise ValueError("threads, batch and length must be positive integers")
                ms = e["ms"]
                if isinstance(ms, bool) or not isinstance(ms, (int, float)):
                    raise TypeError(f"ms {ms!r} is not a number")
            except (KeyError, TypeError, ValueError) as err:
                raise NaskdError(f"{source}: entry {i} is malformed ({type(err).__name__}: {err}); "
                                 f"{way_out}") from None
            if not (math.isfinite(ms) and ms >= 0):
                raise NaskdError(f"{source}: entry {i} ({e['part']}) has time {ms} ms; times must be finite and "
                                 f">= 0; {way_out}")
            out[(e["part"], *ints)] = float(ms)
        return cls(out, machine=theirs)

    def to_dict(self) -> dict:
        rows = [{"part": k, "threads": t, "batch": b, "length": n, "ms": ms}
                for (k, t, b, n), ms in sorted(self.entries.items())]
        return {"kind": LUT_KIND, "format": LUT_FORMAT, "machine": self.machine,
                "machine_id": machine_id(self.machine),
                "protocol": (f"fastest ms of forwards (eval, no_grad), parts in turns, {WARMUP} warm-up rounds, "
                             f"{MIN_REPEAT}-{MAX_REPEAT} timed within {BUDGET_S} s; batch 1: ms per sentence, batch 128: ms per batch"),
                "entries": rows}

    def save(self, path=None) -> Path:
        """Write the table (atomically) to ``path`` or ``self.path``; :meth:`load` reads it back equal."""
        from ..utils.io import write_json

        p = Path(path) if path is not None else self.path
        if p is None:
            raise ValueError("LatencyLUT.save: no path (give one, or open the table with a path)")
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json(p, self.to_dict())
        return p

    def _flush(self) -> None:
        """Save to ``self.path``, first taking in the entries another process saved there meanwhile."""
        if self.path is None:
            return
        if self.path.is_file():
            try:
                other = LatencyLUT.load(self.path)
            except NaskdError:
                other = None                  # unreadable: ours replaces it
            if other is not None:
                for k, v in other.entries.items():
                    self.entries.setdefault(k, v)
        self.save(self.path)

    # --- entries -------------------------------------------------------------------------------
    def ms(self, key: str, threads: int, batch: int, length: int) -> float:
        """The entry's milliseconds; KeyError naming it when it was not measured (see :meth:`ensure`)."""
        try:
            return self.entries[(key, int(threads), int(batch), int(length))]
        except KeyError:
            raise KeyError(f"latency table has no entry for part {key!r} at {threads} threads, batch {batch}, "
                           f"length {length}; measure it with LatencyLUT.ensure") from None

    def missing(self, keys: Iterable[str], lengths, threads=None, batches=BATCHES) -> list[Key]:
        """The ``(key, threads, batch, length)`` settings not yet in the table."""
        threads = machine_threads() if threads is None else tuple(threads)
        keys = list(dict.fromkeys(keys))
        return [(k, t, b, n) for k in keys for t in threads for b in batches for n in _check_lengths(lengths)
                if (k, t, b, n) not in self.entries]

    @staticmethod
    def part_keys(space, items, ctx) -> list[str]:
        """The part keys of ``items``: genotypes of ``space``, :class:`~naskd.space.oneshot.Part`\\ s or
        part keys (str), in order, once each."""
        from ..space.oneshot import Part

        keys = []
        for it in items:
            if isinstance(it, str):
                keys.append(it)
            elif isinstance(it, Part):
                keys.append(it.key)
            else:
                keys += [p.key for p in space.latency_parts(it, ctx)]
        return list(dict.fromkeys(keys))

    def ensure(self, space, genotypes_or_part_keys, ctx, lengths, *, threads=None, batches=BATCHES,
               desc: str = "latency table") -> int:
        """Measure the parts of the given genotypes (or the given part keys) in every setting (threads:
        :func:`machine_threads` unless given; ``batches``; ``lengths`` in tokens) the table lacks, with a
        progress bar; save after each setting when the table has a path. Returns how many entries it
        measured (0, timing nothing, when all were there).

        In a setting with something missing, all the parts given are timed in turns (:func:`time_round`),
        so each runs between others as in a model; only the missing entries are recorded."""
        from ..utils.progress import bar

        keys = self.part_keys(space, genotypes_or_part_keys, ctx)
        todo = self.missing(keys, lengths, threads, batches)
        if not todo:
            return 0
        warn_if_busy(max(t for _, t, _, _ in todo))
        modules = {k: space.part_module(k, ctx) for k in keys}
        for module, _ in modules.values():
            module.eval()
        pbar = bar(len(todo), desc, unit="entry")
        done = 0
        try:
            for t, b, n in dict.fromkeys(e[1:] for e in todo):
                inputs: dict[int, tuple] = {}
                for _, width in modules.values():
                    if width not in inputs:
                        inputs[width] = part_inputs(ctx, width, b, n)
                fns = [lambda m=m, a=inputs[w]: m(*a) for m, w in modules.values()]
                with _threads(t):
                    ms = time_round(fns)
                new = 0
                for k, v in zip(modules, ms):
                    if (k, t, b, n) not in self.entries:
                        self.entries[(k, t, b, n)] = float(v)
                        new += 1
                done += new
                self.measured += new
                pbar.update(new)
                inputs.clear()
                self._flush()
        finally:
            pbar.close()
        return done

    def predict(self, space, genotype, ctx, lengths, threads: int, batch: int) -> float:
        """Predicted milliseconds of the student ``genotype``: the sum over its parts of count x entry, less
        the space's calibrated per-part overhead (:meth:`calibrate`) for every part after the first, the mean
        over ``lengths``. Batch 1: ms per sentence; batch 128: ms per batch of 128. KeyError when an entry
        is missing (call :meth:`ensure` first); no overhead entry counts as 0."""
        parts = space.latency_parts(genotype, ctx)
        count = sum(p.count for p in parts)
        lengths = _check_lengths(lengths)
        per_length = []
        for n in lengths:
            total = sum(p.count * self.ms(p.key, threads, batch, n) for p in parts)
            over = self.entries.get((overhead_key(space, ctx), int(threads), int(batch), n), 0.0)
            per_length.append(max(total - (count - 1) * over, 0.25 * total))
        return self.scale.get((int(threads), int(batch)), 1.0) * float(sum(per_length) / len(per_length))

    def calibrate(self, space, ctx, lengths, *, threads=None, batches=BATCHES, models: int = CALIBRATION_MODELS,
                  seed: int = CALIBRATION_SEED) -> int:
        """Measure the per-part overhead of ``space`` in each setting the table lacks: ``models`` students
        drawn with ``seed`` are timed whole, and the overhead is the median over them of (sum of their
        parts - whole time) / (parts - 1), at least 0. A part timed alone pays per-call work (dispatch, the
        mask's derived tensors) that a model pays once, so a plain sum over-predicts small students at
        batch 1 (the macro space: +35% median error without it). HAT (Wang et al. 2020) likewise corrects
        its latency model with measured whole models. The students' summed whole time is kept beside it, the
        reference :meth:`drift` compares the machine with later. Returns the entries added."""
        threads = machine_threads() if threads is None else tuple(threads)
        key = overhead_key(space, ctx)
        ref = REFERENCE_PREFIX + key
        lengths = _check_lengths(lengths)
        todo = [(t, b, n) for t in threads for b in batches for n in lengths
                if (key, t, b, n) not in self.entries or (ref, t, b, n) not in self.entries]
        if not todo:
            return 0
        genotypes, students = self._calibration_students(space, ctx, lengths, threads, batches, models, seed)
        for t, b, n in todo:
            per, wholes = [], 0.0
            for g, student in zip(genotypes, students):
                whole = self.measure_model(student, ctx, [n], t, b)
                wholes += whole
                parts = space.latency_parts(g, ctx)
                count = sum(p.count for p in parts)
                if count < 2:
                    continue
                total = sum(p.count * self.ms(p.key, t, b, n) for p in parts)
                per.append((total - whole) / (count - 1))
            self.entries[(key, t, b, n)] = max(0.0, float(statistics.median(per))) if per else 0.0
            self.entries[(ref, t, b, n)] = wholes
            self._fresh.add((key, t, b))
            self.measured += 1
        self._flush()
        return len(todo)

    def _calibration_students(self, space, ctx, lengths, threads, batches, models, seed):
        import dataclasses

        import numpy as np

        rng = np.random.default_rng(seed)
        genotypes = [space.sample(rng) for _ in range(models)]
        self.ensure(space, genotypes, ctx, lengths, threads=threads, batches=batches, desc="latency calibration")
        build_ctx = ctx if space.kind == "teacher" else dataclasses.replace(ctx, teacher_dir=None)
        return genotypes, [space.build_student(g, build_ctx) for g in genotypes]

    def drift(self, space, ctx, lengths, *, threads=None, batches=BATCHES, models: int = CALIBRATION_MODELS,
              seed: int = CALIBRATION_SEED) -> dict:
        """Rescale a table measured earlier to the machine as it is now. The calibration students of
        :meth:`calibrate` are timed whole again; where their summed time differs from the one stored when the
        table was calibrated by more than ``DRIFT_TOLERANCE``, every prediction and teacher time of that
        (threads, batch) is multiplied by the ratio (now / then) for the life of this object (the file is not
        changed). A virtual machine's speed moves between days (on this CPU a cached table over-predicted
        every student by 5-10% a day later); ratios of two models' times move much less. Settings calibrated
        by this object, or never calibrated, keep factor 1, and so does every setting while other processes keep
        the cores busy (:func:`warn_if_busy`). Returns {(threads, batch): factor}."""
        threads = machine_threads() if threads is None else tuple(threads)
        key = overhead_key(space, ctx)
        ref = REFERENCE_PREFIX + key
        lengths = _check_lengths(lengths)
        todo = [(t, b) for t in threads for b in batches
                if (key, t, b) not in self._fresh and all((ref, t, b, n) in self.entries for n in lengths)]
        if not todo:
            return {}
        if warn_if_busy(max(t for t, _ in todo)):   # a busy machine's times would rescale the table wrongly
            return {}
        _, students = self._calibration_students(space, ctx, lengths, threads, batches, models, seed)
        out = {}
        for t, b in todo:
            now = sum(self.measure_model(st, ctx, [n], t, b) for st in students for n in lengths)
            then = sum(self.entries[(ref, t, b, n)] for n in lengths)
            factor = now / then if then > 0 else 1.0
            if abs(factor - 1.0) > DRIFT_TOLERANCE:
                self.scale[(t, b)] = factor
            out[(t, b)] = factor
        return out

    # --- whole models --------------------------------------------------------------------------
    @staticmethod
    def measure_model(module, ctx, lengths, threads: int, batch: int) -> float:
        """Measured milliseconds of the whole model ``module`` (called with the keyword inputs of
        :func:`model_inputs`) by the table's protocol, the mean over ``lengths``: batch 1, ms per sentence;
        batch 128, ms per batch of 128. Not cached."""
        module = module.eval()
        out = []
        for n in _check_lengths(lengths):
            feeds = model_inputs(ctx, batch, n)
            with _threads(threads):
                out.append(time_ms(lambda f=feeds: module(**f)))
        return float(sum(out) / len(out))

    def teacher_ms(self, teacher_dir, ctx, lengths, threads: int, batch: int) -> float:
        """Milliseconds of the teacher run ``teacher_dir`` (as :func:`~naskd.teachers.model.load_teacher`
        rebuilds it), timed whole by the protocol of :meth:`measure_model`, the mean over ``lengths``.
        Kept in the table as the part ``teacher:<fingerprint of its weights>``, measured only when missing."""
        from ..teachers.model import load_teacher, teacher_fingerprint

        fp = teacher_fingerprint(teacher_dir)
        key = TEACHER_PREFIX + fp[:16]
        lengths = _check_lengths(lengths)
        todo = [n for n in lengths if (key, int(threads), int(batch), n) not in self.entries]
        if todo:
            warn_if_busy(int(threads))
            if self._teacher is None or self._teacher[0] != fp:
                self._teacher = (fp, load_teacher(teacher_dir)[0].eval())
            model = self._teacher[1]
            for n in todo:
                self.entries[(key, int(threads), int(batch), n)] = self.measure_model(model, ctx, [n], threads, batch)
                self.measured += 1
            self._flush()
        return (self.scale.get((int(threads), int(batch)), 1.0)
                * float(sum(self.ms(key, threads, batch, n) for n in lengths) / len(lengths)))
