"""The latency lookup table (naskd.search.lut) on a toy space defined here: files (round trip, refusals),
measuring only what is missing, predictions from entries set by hand, representative lengths, threads.
No timing is asserted: the timing function is replaced by a counter where calls are counted."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from naskd.errors import NaskdError
from naskd.search import lut as L
from naskd.search.lut import LatencyLUT, machine_id, machine_key, representative_lengths
from naskd.space.oneshot import BuildContext, OneShotSpace, Part


# --- a toy space: an embedding input part, `depth` Linear layers of one width, a head ------------------
@dataclass(frozen=True)
class ToyGenotype:
    depth: int
    width: int

    def to_dict(self):
        return {"kind": "toy", "depth": self.depth, "width": self.width}

    def describe(self):
        return f"toy d{self.depth} w{self.width}"


class Embed(nn.Module):
    def __init__(self, vocab, width):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)

    def forward(self, input_ids, attention_mask):
        return self.emb(input_ids) * attention_mask[..., None]


class Layer(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x, mask):
        return torch.relu(self.lin(x)) * mask[..., None]


class Head(nn.Module):
    def __init__(self, width, labels):
        super().__init__()
        self.proj = nn.Linear(width, labels)

    def forward(self, x, mask):
        m = mask[..., None].float()
        return self.proj((x * m).sum(1) / m.sum(1))


class ToyStudent(nn.Module):
    def __init__(self, g, ctx):
        super().__init__()
        self.embed = Embed(ctx.vocab_size, g.width)
        self.layers = nn.ModuleList(Layer(g.width) for _ in range(g.depth))
        self.head = Head(g.width, ctx.num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        x = self.embed(input_ids, attention_mask)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.head(x, attention_mask)


class ToySpace(OneShotSpace):
    kind = "toy"
    name = "toy"

    @classmethod
    def from_yaml(cls, data, source, ctx=None):
        return cls()

    @classmethod
    def genotype_class(cls):
        return ToyGenotype

    def dimensions(self):
        return {"depth": (1, 2, 3), "width": (8, 16)}

    def from_choices(self, choices):
        return ToyGenotype(int(choices["depth"]), int(choices["width"]))

    def choices_of(self, genotype):
        return {"depth": genotype.depth, "width": genotype.width}

    def check(self):
        pass

    def contains(self, genotype):
        return genotype.depth in (1, 2, 3) and genotype.width in (8, 16)

    def genotype_from_dict(self, d, source="genotype"):
        return ToyGenotype(d["depth"], d["width"])

    def supernet(self, ctx):
        raise NotImplementedError

    def build_student(self, genotype, ctx):
        return ToyStudent(genotype, ctx)

    def latency_parts(self, genotype, ctx):
        w = genotype.width
        return [Part(f"embed:w{w}"), Part(f"linear:w{w}", genotype.depth), Part(f"head:w{w}")]

    def part_module(self, key, ctx):
        name, w = key.split(":w")
        w = int(w)
        if name == "embed":
            return Embed(ctx.vocab_size, w), 0
        if name == "linear":
            return Layer(w), w
        return Head(w, ctx.num_labels), w


CTX = BuildContext(kind="single", num_labels=2, vocab_size=100)
G1, G2 = ToyGenotype(2, 8), ToyGenotype(3, 16)


class Counter:
    """Stands in for lut.time_round: counts its calls and the callables timed (running each once, so the
    inputs must fit the modules) and records the torch threads in force."""

    def __init__(self, ms=1.0):
        self.calls, self.timed, self.ms, self.threads = 0, 0, ms, []

    def __call__(self, fns, **_):
        self.calls += 1
        self.timed += len(fns)
        self.threads.append(torch.get_num_threads())
        with torch.no_grad():
            for fn in fns:
                fn()
        return [self.ms] * len(fns)


def by_hand() -> LatencyLUT:
    lut = LatencyLUT()
    for t in (1, 2):
        for b in (1, 128):
            for n in (10, 30):
                scale = t * b * n
                lut.entries[("embed:w8", t, b, n)] = 0.5 * scale
                lut.entries[("linear:w8", t, b, n)] = 0.25 * scale
                lut.entries[("head:w8", t, b, n)] = 0.125 + scale
    return lut


# --- files ---------------------------------------------------------------------------------------------
def test_round_trip(tmp_path):
    lut = by_hand()
    lut.entries[("teacher:abc", 1, 1, 10)] = 1 / 3                  # a float that needs every digit
    p = lut.save(tmp_path / "lut.json")
    back = LatencyLUT.load(p)
    assert back.entries == lut.entries
    assert back.to_dict() == lut.to_dict()
    text = p.read_text()
    back.save(p)
    assert p.read_text() == text


def _other(tmp_path, **change):
    d = by_hand().to_dict()
    d["machine"] = {**d["machine"], **change}
    p = tmp_path / "other.json"
    p.write_text(json.dumps(d))
    return p


def test_refuses_other_torch_version(tmp_path):
    p = _other(tmp_path, torch="1.0.0")
    with pytest.raises(NaskdError) as e:
        LatencyLUT.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(p) in msg and "torch 1.0.0" in msg and f"torch {torch.__version__}" in msg
    assert "leave out --latency-table" in msg


def test_refuses_other_machine(tmp_path):
    ours = machine_key()
    p = _other(tmp_path, cpu="Imaginary CPU 9000", cores=ours["cores"] + 64)
    with pytest.raises(NaskdError) as e:
        LatencyLUT.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert "Imaginary CPU 9000" in msg and ours["cpu"] in msg
    assert f"{ours['cores'] + 64} cores" in msg and f"{ours['cores']} cores" in msg
    assert "leave out --latency-table" in msg
    assert machine_id({**ours, "cpu": "Imaginary CPU 9000"}) != machine_id()


@pytest.mark.parametrize("content, why", [
    ("[1, 2]", "not a naskd latency"),
    ('{"kind": "something else"}', "not a naskd latency"),
    ("not json {", "not valid JSON"),
])
def test_refuses_what_is_not_a_table(tmp_path, content, why):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(NaskdError, match=why) as e:
        LatencyLUT.load(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("entry", [
    {"part": "a", "threads": 1, "batch": 1, "length": 8},                          # no ms
    {"part": 3, "threads": 1, "batch": 1, "length": 8, "ms": 1.0},                 # part not a str
    {"part": "a", "threads": 0, "batch": 1, "length": 8, "ms": 1.0},               # threads 0
    {"part": "a", "threads": 1, "batch": "1", "length": 8, "ms": 1.0},             # batch a string
    {"part": "a", "threads": 1, "batch": 1, "length": 8, "ms": "fast"},
    {"part": "a", "threads": 1, "batch": 1, "length": 8, "ms": -1.0},
    {"part": "a", "threads": 1, "batch": 1, "length": 8, "ms": float("nan")},
    {"part": "a", "threads": 1, "batch": 1, "length": 8, "ms": float("inf")},
    "a string",
])
def test_refuses_bad_entries(tmp_path, entry):
    d = LatencyLUT().to_dict()
    d["entries"] = [{"part": "ok", "threads": 1, "batch": 1, "length": 8, "ms": 1.0}, entry]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))                     # json writes NaN and Infinity, and reads them back
    with pytest.raises(NaskdError, match="entry 1") as e:
        LatencyLUT.load(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(NaskdError, match="does not exist"):
        LatencyLUT.load(tmp_path / "nope.json")


# --- measuring -----------------------------------------------------------------------------------------
def test_ensure_twice_measures_nothing(tmp_path, monkeypatch):
    count = Counter()
    monkeypatch.setattr(L, "time_round", count)
    lut = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert lut.path == tmp_path / "cache" / "latency" / f"{machine_id()}.json"
    threads = L.machine_threads()
    settings = len(threads) * 2 * 2                                # threads, 2 batches, 2 lengths
    n = lut.ensure(ToySpace(), [G1, G2], CTX, [5, 9])
    assert n == 6 * settings == len(lut.entries)                   # 6 part keys
    assert count.calls == settings and count.timed == n           # one round of all parts per setting
    assert lut.ensure(ToySpace(), [G1, G2], CTX, [5, 9]) == 0
    assert count.calls == settings
    # a second search on this machine: the cache file has every entry
    again = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert again.entries == lut.entries
    assert again.ensure(ToySpace(), [G2, G1], CTX, [9, 5]) == 0
    assert count.calls == settings
    # a new length measures only that length; part keys may be given directly
    assert again.ensure(ToySpace(), ["linear:w8", Part("head:w8")], CTX, [5, 7]) == 2 * len(threads) * 2
    assert count.calls == settings + len(threads) * 2
    # one entry missing per setting: the round times all of G1's parts (so the missing one runs between
    # others, as in a model) and records only the missing one, leaving the others as they were
    before = dict(again.entries)
    count.ms = 5.0
    third = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert third.ensure(ToySpace(), [G1], CTX, [7], threads=threads) == 2 * len(threads)
    assert count.timed == n + 2 * len(threads) * 2 + 3 * 2 * len(threads)
    assert all(third.entries[k] == v for k, v in before.items())
    assert third.entries[("embed:w8", threads[0], 1, 7)] == 5.0


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NASKD_CACHE_DIR", str(tmp_path / "env-cache"))
    assert L.default_lut_path() == tmp_path / "env-cache" / "latency" / f"{machine_id()}.json"


def test_real_timing_gives_finite_times():
    lut = LatencyLUT()
    lut.ensure(ToySpace(), [ToyGenotype(1, 8)], CTX, [4], threads=(1,), batches=(1, 2))
    assert len(lut.entries) == 6
    assert all(math.isfinite(v) and v > 0 for v in lut.entries.values())
    model_ms = LatencyLUT.measure_model(ToySpace().build_student(ToyGenotype(1, 8), CTX), CTX, [4], 1, 1)
    assert math.isfinite(model_ms) and model_ms > 0


def test_predict_is_sum_of_count_times_entry_averaged_over_lengths():
    lut = by_hand()
    space = ToySpace()
    for t in (1, 2):
        for b in (1, 128):
            want = np.mean([lut.entries[("embed:w8", t, b, n)] + 2 * lut.entries[("linear:w8", t, b, n)]
                            + lut.entries[("head:w8", t, b, n)] for n in (10, 30)])
            assert lut.predict(space, G1, CTX, [10, 30], t, b) == pytest.approx(want, rel=1e-12)
    assert lut.predict(space, G1, CTX, [30], 2, 128) == pytest.approx(0.5 * 7680 + 2 * 0.25 * 7680 + 0.125 + 7680)
    with pytest.raises(KeyError, match="embed:w16"):
        lut.predict(space, ToyGenotype(1, 16), CTX, [10], 1, 1)


def test_threads_set_while_measuring_and_restored(monkeypatch):
    count = Counter()
    monkeypatch.setattr(L, "time_round", count)
    torch.set_num_threads(1)
    lut = LatencyLUT()
    lut.ensure(ToySpace(), [G1], CTX, [4], threads=(2, 1), batches=(1,))
    assert count.threads == [2, 1]                                # a round per setting: 2 threads, then 1
    assert torch.get_num_threads() == 1
    LatencyLUT.measure_model(ToySpace().build_student(G1, CTX), CTX, [4], 2, 1)
    assert count.threads[-1] == 2 and torch.get_num_threads() == 1

    def boom(fn, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr(L, "time_round", boom)
    with pytest.raises(RuntimeError):
        LatencyLUT().ensure(ToySpace(), [G2], CTX, [4], threads=(2,), batches=(1,))
    assert torch.get_num_threads() == 1


def test_inputs():
    ids, mask = L.part_inputs(CTX, 0, 3, 7)
    assert ids.shape == (3, 7) and ids.dtype == torch.int64 and int(ids.max()) < CTX.vocab_size
    assert mask.dtype == torch.bool and bool(mask.all())
    x, mask = L.part_inputs(CTX, 16, 2, 5)
    assert x.shape == (2, 5, 16) and x.dtype == torch.float32 and mask.shape == (2, 5)
    assert torch.equal(L.part_inputs(CTX, 16, 2, 5)[0], x)                # seeded
    feeds = L.model_inputs(CTX, 2, 6)
    assert set(feeds) == {"input_ids", "attention_mask"}
    pair = L.model_inputs(BuildContext(kind="pair", num_labels=2, vocab_size=100, pair=True), 2, 6)
    assert pair["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1]] * 2
    tag = L.model_inputs(BuildContext(kind="tagging", num_labels=5, vocab_size=100), 1, 4)
    assert tag["word_starts"].tolist() == [[0, 1, 2, 3]] and bool(tag["word_mask"].all())


def test_representative_lengths():
    # 1..60: the terciles are 1-20, 21-40, 41-60; the quantiles 1/6, 1/2, 5/6 are 10, 30, 50
    assert representative_lengths(range(1, 61)) == [10, 30, 50]
    assert representative_lengths(range(1, 61), n=1) == [30]
    # a skewed distribution: half the sentences 8 tokens, a third 20, a sixth 100
    lengths = [8] * 30 + [20] * 20 + [100] * 10
    assert representative_lengths(np.random.default_rng(0).permutation(lengths)) == [8, 8, 20]
    assert all(v in lengths for v in representative_lengths(lengths, n=5))
    with pytest.raises(NaskdError):
        representative_lengths([])


def test_teacher_ms_is_cached(tiny_teacher, tmp_path, monkeypatch):
    from naskd.teachers import model as tm

    run_dir, _ = tiny_teacher
    count = Counter(ms=2.5)
    monkeypatch.setattr(L, "time_round", count)
    loads = []
    real = tm.load_teacher
    monkeypatch.setattr(tm, "load_teacher", lambda d, *a: loads.append(d) or real(d, *a))
    _, tok, _ = real(run_dir)
    ctx = BuildContext(kind="single", num_labels=2, vocab_size=len(tok))
    lut = LatencyLUT(path=tmp_path / "lut.json")
    assert lut.teacher_ms(run_dir, ctx, [6, 12], 1, 1) == 2.5
    assert count.calls == 2 and len(loads) == 1
    key = L.TEACHER_PREFIX + tm.teacher_fingerprint(run_dir)[:16]
    assert (key, 1, 1, 6) in LatencyLUT.load(tmp_path / "lut.json").entries
    again = LatencyLUT.load(tmp_path / "lut.json")
    assert again.teacher_ms(run_dir, ctx, [12, 6], 1, 1) == 2.5
    assert count.calls == 2 and len(loads) == 1


def test_calibrated_overhead_makes_predictions_whole_model_times(tmp_path, monkeypatch):
    """Parts of 1 ms each; whole students that pay 0.3 ms less per part after the first: calibration finds
    0.3 on its own draws, and predictions of other genotypes then equal their whole times."""
    monkeypatch.setattr(L, "time_round", Counter(ms=1.0))
    timed = []

    def whole(module, ctx, lengths, threads, batch):
        count = 2 + len(module.layers)
        timed.append(count)
        return count * 1.0 - (count - 1) * 0.3

    monkeypatch.setattr(LatencyLUT, "measure_model", staticmethod(whole))
    lut = LatencyLUT.open(cache_dir=tmp_path / "cache")
    space = ToySpace()
    assert lut.calibrate(space, CTX, [5, 9], threads=(1,), batches=(1,)) == 2      # two lengths
    assert len(timed) == 2 * L.CALIBRATION_MODELS
    assert lut.entries[(L.overhead_key(space, CTX), 1, 1, 5)] == pytest.approx(0.3)
    # another task shape (pairs) is another calibration
    import dataclasses

    assert L.overhead_key(space, dataclasses.replace(CTX, pair=True)) != L.overhead_key(space, CTX)
    for g in (G1, G2, ToyGenotype(1, 8)):
        lut.ensure(space, [g], CTX, [5, 9], threads=(1,), batches=(1,))
        count = 2 + g.depth
        assert lut.predict(space, g, CTX, [5, 9], 1, 1) == pytest.approx(count - (count - 1) * 0.3)
    assert lut.calibrate(space, CTX, [5, 9], threads=(1,), batches=(1,)) == 0      # kept in the table
    reopened = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert reopened.predict(space, G2, CTX, [5, 9], 1, 1) == pytest.approx(5 - 4 * 0.3)
    # whole students slower than their parts: no negative overhead, the plain sum
    monkeypatch.setattr(LatencyLUT, "measure_model", staticmethod(lambda m, c, ls, t, b: 100.0))
    assert lut.calibrate(space, CTX, [5], threads=(1,), batches=(128,)) == 1
    lut.ensure(space, [G1], CTX, [5], threads=(1,), batches=(128,))
    assert lut.predict(space, G1, CTX, [5], 1, 128) == pytest.approx(4.0)


def test_busy_machine_is_warned_about(monkeypatch):
    import naskd.utils.runtime as R

    monkeypatch.setattr(R.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(R, "other_cpu_use", lambda: 1.0)          # another process keeps a core busy
    with pytest.warns(UserWarning, match="the machine is busy .other processes use 1.0 of its 2 cores"):
        assert L.warn_if_busy(1)
    monkeypatch.setattr(R, "other_cpu_use", lambda: 0.1)          # the machine's own background
    assert not L.warn_if_busy(2) and R.busy_cores(1) is None
    monkeypatch.setattr(R.os, "sched_getaffinity", lambda pid: set(range(16)))   # room for others beside 2 threads
    monkeypatch.setattr(R, "other_cpu_use", lambda: 4.0)
    assert R.busy_cores(2) is None and R.busy_cores(14) == (4.0, 16)
    monkeypatch.setattr(R, "other_cpu_use", lambda: None)         # no /proc/stat: nothing said
    assert R.busy_cores(1) is None


def test_other_processes_cpu_use_is_measured_and_ours_is_not():
    import subprocess
    import sys
    import threading

    from naskd.utils.runtime import other_cpu_use

    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.5)
        assert other_cpu_use(0.5) > 0.6               # a spinning child is another process: about one core
    finally:
        spinner.kill()
        spinner.wait()
    before = other_cpu_use(0.5)                        # the machine's background
    stop = []
    spin = threading.Thread(target=lambda: [None for _ in iter(lambda: bool(stop), True)])
    spin.start()
    try:
        ours = other_cpu_use(0.5)                      # our own thread spinning (a core) is not another process
    finally:
        stop.append(1)
        spin.join()
    assert ours < before + 0.6


def test_drift_rescales_a_table_measured_on_a_slower_day(tmp_path, monkeypatch):
    """A table calibrated when whole students took w ms; a later process where the same students take
    0.8 w: predictions and teacher times of that setting are scaled by 0.8 in the later process only,
    a change within the tolerance leaves them alone, and the file itself is not rewritten."""
    monkeypatch.setattr(L, "time_round", Counter(ms=1.0))
    monkeypatch.setattr(L, "warn_if_busy", lambda threads: False)
    speed = {"factor": 1.0}

    def whole(module, ctx, lengths, threads, batch):
        count = 2 + len(module.layers)
        return speed["factor"] * (count * 1.0 - (count - 1) * 0.3)

    monkeypatch.setattr(LatencyLUT, "measure_model", staticmethod(whole))
    space = ToySpace()
    first = LatencyLUT.open(cache_dir=tmp_path / "cache")
    first.calibrate(space, CTX, [5, 9], threads=(1,), batches=(1,))
    first.ensure(space, [G2], CTX, [5, 9], threads=(1,), batches=(1,))
    before = first.predict(space, G2, CTX, [5, 9], 1, 1)
    assert first.drift(space, CTX, [5, 9], threads=(1,), batches=(1,)) == {}      # calibrated just now
    saved = (tmp_path / "cache").rglob("*.json").__next__().read_text()

    speed["factor"] = 0.8
    later = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert later.calibrate(space, CTX, [5, 9], threads=(1,), batches=(1,)) == 0
    assert later.drift(space, CTX, [5, 9], threads=(1,), batches=(1,)) == {(1, 1): pytest.approx(0.8)}
    assert later.predict(space, G2, CTX, [5, 9], 1, 1) == pytest.approx(0.8 * before)
    assert later.predict(space, G2, CTX, [5, 9], 1, 1) == pytest.approx(whole(space.build_student(G2, CTX),
                                                                              CTX, [5], 1, 1))
    assert (tmp_path / "cache").rglob("*.json").__next__().read_text() == saved

    busy = LatencyLUT.open(cache_dir=tmp_path / "cache")            # a busy machine: not rescaled at all
    monkeypatch.setattr(L, "warn_if_busy", lambda threads: True)
    assert busy.drift(space, CTX, [5, 9], threads=(1,), batches=(1,)) == {} and busy.scale == {}
    monkeypatch.setattr(L, "warn_if_busy", lambda threads: False)

    speed["factor"] = 1.0 + L.DRIFT_TOLERANCE / 2                  # within the tolerance: unchanged
    again = LatencyLUT.open(cache_dir=tmp_path / "cache")
    assert again.drift(space, CTX, [5, 9], threads=(1,), batches=(1,))[(1, 1)] == pytest.approx(speed["factor"])
    assert again.predict(space, G2, CTX, [5, 9], 1, 1) == pytest.approx(before)


def test_batch_one_is_measured_whole():
    assert L.whole_model_setting(2, 1) and L.whole_model_setting(1, 1)
    assert not L.whole_model_setting(2, 128) and not L.whole_model_setting(1, 128)
