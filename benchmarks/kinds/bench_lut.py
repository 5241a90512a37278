"""How well does the latency lookup table predict a whole student's CPU time? For each space named, sample
N genotypes (seeded), measure the table's entries for their parts (naskd.search.lut), and compare the
predicted time (sum over parts of count x entry, mean over the representative SST-2 lengths) with the
whole student's time measured by the same protocol, at threads 1/2 and batch 1/128. The target: within
15% on at least 20 sampled architectures. At batch 1 a search measures each candidate whole
(the table's sum misses there); the estimate compared is then a first whole measurement, and the table's
sum is reported beside it. Every setting also gives that first pass against the second (the "repeat error"):
how well the machine repeats its own measurement, the floor under any prediction's error.

The study: `python benchmarks/run.py lut_accuracy_macro` (benchmarks/studies/); other spaces with
``--set 'space=[nas_kd, macro, teacher]' --set teacher=RUN_DIR``.

The teacher run gives the tokenizer (its vocabulary sizes the students) and, for the teacher space, the
layers; without ``teacher`` the tokenizer of ``tokenizer`` is used. Lengths: ``lengths``, or the quantiles
1/6, 1/2, 5/6 of the SST-2 dev split's token lengths under that tokenizer. By default a fresh table is
measured (parts and models close together in time); ``cache`` uses and fills this machine's cache file.
Run it alone on a quiet machine (timings). Writes benchmarks/results/lut_accuracy_<space>.{json,md}.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import DATA_DIR, REQUIRED, RESULTS, markdown_table, study_command

from naskd.data.encode import encode
from naskd.data.readers import load_split
from naskd.data.tasks import get_task
from naskd.search.lut import (
    BATCHES,
    CALIBRATION_MODELS,
    CALIBRATION_SEED,
    DRIFT_TOLERANCE,
    LatencyLUT,
    describe_machine,
    machine_key,
    machine_threads,
    representative_lengths,
    whole_model_setting,
)
from naskd.space.oneshot import BuildContext, load_oneshot_space
from naskd.utils.io import write_json, write_text

TOLERANCE = 0.15
PARAMS = {
    "space": (REQUIRED, "space names or YAMLs (a list)"),
    "teacher": (None, "a teacher run directory (tokenizer; the teacher space)"),
    "tokenizer": ("../shared/models/bert-tiny-splade", "the tokenizer when there is no teacher"),
    "genotypes": (20, "genotypes sampled per space"),
    "seed": (0, "the seed of the sample"),
    "lengths": (None, "token lengths (a list); default: the SST-2 dev quantiles 1/6, 1/2, 5/6"),
    "threads": (None, "thread counts (a list); default: 1 and 2 (those the CPU has)"),
    "batches": (list(BATCHES), "batch sizes (a list)"),
    "max_length": (128, "the tokenizer's maximum length for the dev lengths"),
    "data_dir": (DATA_DIR, "the data folder"),
    "cache": (False, "use and fill this machine's cached table"),
    "cache_dir": (None, "the cache folder (default: naskd's)"),
    "out": (str(RESULTS), "folder for lut_accuracy_<space>.{json,md}"),
}


def sample_genotypes(space, n: int, seed: int) -> list:
    """``n`` distinct genotypes drawn with a seeded generator (fewer when the space is smaller)."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(50 * n):
        g = space.sample(rng)
        key = repr(g.to_dict()) if hasattr(g, "to_dict") else repr(g)
        if key not in seen:
            seen.add(key)
            out.append(g)
        if len(out) == n:
            break
    return out


def summary(rows: list[dict]) -> dict:
    errs = [abs(r["error %"]) for r in rows]
    return {"median |error| %": statistics.median(errs), "max |error| %": max(errs),
            "within 15%": sum(e <= 100 * TOLERANCE for e in errs) / len(errs), "genotypes": len(errs)}


def run_space(name: str, args, ctx: BuildContext, lengths: list[int], threads: tuple, batches: tuple,
              teacher_ms: dict) -> dict:
    space = load_oneshot_space(name, ctx=ctx)
    genotypes = sample_genotypes(space, args.genotypes, args.seed)
    lut = LatencyLUT.open(cache_dir=args.cache_dir) if args.cache else LatencyLUT()
    t0 = time.perf_counter()
    # as a search does: the parts of many genotypes measured in turns with each other, then the space's
    # per-part overhead calibrated on whole students drawn from a stream of their own (never the ones
    # scored here)
    measured_entries = lut.ensure(space, genotypes, ctx, lengths, threads=threads, batches=batches,
                                  desc=f"{name}: part entries")
    measured_entries += lut.calibrate(space, ctx, lengths, threads=threads, batches=batches)
    drift = lut.drift(space, ctx, lengths, threads=threads, batches=batches)   # a cached table, as a search does
    lut_s = time.perf_counter() - t0
    settings = {(t, b): [] for t in threads for b in batches}
    t0 = time.perf_counter()
    # a first whole pass over every genotype (as a search meets them one after another): where a search
    # measures each candidate whole instead of summing the table (batch 1) it is the estimate; everywhere it
    # gives the measurement's own repeatability against the second pass (the "measured" column), the floor
    # under any prediction's error on this machine
    whole = [(t, b) for (t, b) in settings if whole_model_setting(t, b)]
    first = {}
    for i, g in enumerate(genotypes):
        torch.manual_seed(args.seed + i)
        model = space.build_student(g, ctx).eval()
        for t, b in settings:
            first[(i, t, b)] = LatencyLUT.measure_model(model, ctx, lengths, t, b)
        del model
    for i, g in enumerate(genotypes):
        torch.manual_seed(args.seed + i)
        model = space.build_student(g, ctx).eval()
        for (t, b), rows in settings.items():
            pred = first[(i, t, b)] if (t, b) in whole else lut.predict(space, g, ctx, lengths, t, b)
            meas = LatencyLUT.measure_model(model, ctx, lengths, t, b)
            row = {"genotype": space.describe(g), "predicted ms": pred, "measured ms": meas,
                   "error %": 100 * (pred - meas) / meas, "parts": len(space.latency_parts(g, ctx)),
                   "first pass ms": first[(i, t, b)],
                   "repeat error %": 100 * (first[(i, t, b)] - meas) / meas}
            if (t, b) in whole:       # the table's sum, which the search does not use here, for the record
                tab = lut.predict(space, g, ctx, lengths, t, b)
                row.update({"table sum ms": tab, "table error %": 100 * (tab - meas) / meas})
            rows.append(row)
        del model
        print(f"{name}: genotype {i + 1}/{len(genotypes)} timed whole", file=sys.stderr, flush=True)
    model_s = time.perf_counter() - t0
    out = {"space": name, "genotypes": [g.to_dict() if hasattr(g, "to_dict") else repr(g) for g in genotypes],
           "lengths": lengths, "entries measured": measured_entries, "seconds measuring entries": lut_s,
           "seconds measuring models": model_s, "settings": [],
           "drift": {f"{t} threads, batch {b}": f for (t, b), f in drift.items()}}
    for (t, b), rows in settings.items():
        s = {"threads": t, "batch": b, "rows": rows, "summary": summary(rows),
             "unit": "ms per sentence" if b == 1 else f"ms per batch of {b}",
             "estimate": "measured whole" if (t, b) in whole else "table"}
        s["repeat summary"] = summary([{"error %": r["repeat error %"]} for r in rows])
        if (t, b) in whole:
            s["table summary"] = summary([{"error %": r["table error %"]} for r in rows])
        if (t, b) in teacher_ms:
            s["teacher ms"] = teacher_ms[(t, b)]
        out["settings"].append(s)
    return out


def markdown(res: dict, command: str, header: str) -> str:
    parts = [f"## Latency lookup table accuracy: space `{res['space']}`", "",
             f"Made with `{command}`.", "", header, "",
             (f"{len(res['genotypes'])} genotypes sampled (seeded); lengths {res['lengths']} (tokens); "
             f"{res['entries measured']} part entries measured in {res['seconds measuring entries']:.0f} s, the "
             f"whole students in {res['seconds measuring models']:.0f} s. Predicted = sum over parts of count x "
             "entry, less the space's per-part overhead for each part after the first (calibrated on "
             f"{CALIBRATION_MODELS} other students drawn with seed {CALIBRATION_SEED}, timed whole; "
             "`LatencyLUT.calibrate`), mean over the lengths; measured = the whole student by the same protocol (the "
             "fastest of the timed forwards after warm-up, eval, no_grad, seeded inputs, all-true masks). error % = "
             "(predicted - measured) / measured. repeat error % = (first pass - measured) / measured: the same "
             "student timed whole in an earlier pass over all genotypes, so the machine's own repeatability, "
             "which no prediction can beat."), ""]
    if res.get("drift"):
        parts += [("The table was read from this machine's cache and its calibration students timed again "
                   "(`LatencyLUT.drift`, as every search does): now / then = "
                   + ", ".join(f"{v:.3f} ({k})" for k, v in res["drift"].items())
                   + f"; a factor further than {100 * DRIFT_TOLERANCE:.0f}% from 1 rescales that setting's "
                   "predictions."), ""]
    for s in res["settings"]:
        sm = s["summary"]
        parts += [(f"### {s['threads']} thread{'s' if s['threads'] > 1 else ''}, batch {s['batch']} "
                  f"({s['unit']})"), ""]
        rows = s["rows"] + [
            {"genotype": "**median abs error**", "error %": sm["median |error| %"]},
            {"genotype": "**max abs error**", "error %": sm["max |error| %"]},
            {"genotype": f"**share within {100 * TOLERANCE:.0f}%**",
             "error %": f"{100 * sm['within 15%']:.0f}% of {sm['genotypes']}"}]
        rs = s.get("repeat summary")
        if rs:
            rows[-3]["repeat error %"] = rs["median |error| %"]
            rows[-2]["repeat error %"] = rs["max |error| %"]
            rows[-1]["repeat error %"] = f"{100 * rs['within 15%']:.0f}% of {rs['genotypes']}"
        cols = ["genotype", "predicted ms", "measured ms", "error %"]
        if s.get("estimate") == "measured whole":
            ts = s["table summary"]
            parts += [("Here a search does not use the table: each candidate is measured whole "
                       "(`naskd.search.lut.whole_model_setting`), so \"predicted\" is a first whole measurement "
                       "(a pass over all genotypes before this one) and the error is the measurement's repeatability. "
                       f"The table's sum is shown for the record: {100 * ts['within 15%']:.0f}% of {ts['genotypes']} "
                       f"within 15%, median abs error {ts['median |error| %']:.1f}%."), ""]
            cols += ["table sum ms", "table error %"]
        elif rs:
            cols += ["first pass ms", "repeat error %"]
        if "teacher ms" in s:
            rows.append({"genotype": "teacher (whole, for scale)", "measured ms": s["teacher ms"]})
        parts += [markdown_table(rows, cols), ""]
    return "\n".join(parts)


def _list(v) -> list | None:
    """A list parameter given as one value (``--set space=macro``, ``--set threads=1``) is a list of one."""
    return None if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def run(args) -> None:
    args.space, args.lengths, args.threads, args.batches = (_list(v) for v in (args.space, args.lengths,
                                                                               args.threads, args.batches))
    command = study_command()

    from transformers import AutoTokenizer

    spec = get_task("sst2")
    info = None
    if args.teacher:
        from naskd.teachers.model import read_teacher_info

        info = read_teacher_info(args.teacher)
    tok = AutoTokenizer.from_pretrained(args.teacher or args.tokenizer)
    ctx = BuildContext.for_task(spec, vocab_size=len(tok), teacher_dir=args.teacher, teacher_info=info)
    if args.lengths:
        lengths = list(args.lengths)
    else:
        dev = encode(spec, load_split(spec, args.data_dir, "dev"), tok, args.max_length)
        lengths = representative_lengths(dev.lengths)
    threads = tuple(args.threads) if args.threads else machine_threads()
    batches = tuple(args.batches)
    header = (f"Machine: {describe_machine(machine_key())}. Task SST-2 (dev lengths under the "
              f"{'teacher' if args.teacher else 'given'} tokenizer, vocabulary {len(tok)}).")
    teacher_ms = {}
    if args.teacher:
        lut = LatencyLUT.open(cache_dir=args.cache_dir) if args.cache else LatencyLUT()
        teacher_ms = {(t, b): lut.teacher_ms(args.teacher, ctx, lengths, t, b) for t in threads for b in batches}
    out_dir = Path(args.out)
    for name in args.space:
        res = run_space(name, args, ctx, lengths, threads, batches, teacher_ms)
        res.update(command=command, machine=machine_key(), header=header)
        md = markdown(res, command, header)
        stem = Path(name).stem
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / f"lut_accuracy_{stem}.json", res)
        write_text(out_dir / f"lut_accuracy_{stem}.md", md + "\n")
        print(md, flush=True)

