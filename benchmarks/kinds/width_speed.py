"""Which width can a genotype afford? Size and speed of untrained students (a genotype at several cell
widths) against the teacher, timed as `naskd bench` times trained ones (dev sentences, models taking
turns, batch 1 and bucketed batch 128), before hours go into retraining one. Speed does not depend on the
weights, so the table predicts the bench's size and speed columns; accuracy needs the retraining.

The study: `python benchmarks/run.py width_speed_sst2` (benchmarks/studies/; two threads); writes
benchmarks/results/width_speed_sst2.{md,json}. Run it alone on the machine (timings).
"""
from __future__ import annotations

from pathlib import Path

import torch

from common import DATA_DIR, publish

from naskd.bench import SIZE_AND_SPEED_COLUMNS, add_ratios, prepare_model, time_interleaved
from naskd.errors import NaskdError
from naskd.genotype import Genotype
from naskd.modeldir import LoadedModel, load_model
from naskd.students.fixed import FixedStudent

DEFAULT_GENOTYPES = ["runs/sst2-search-seed0/genotype.json", "runs/sst2-search-40k/genotype.json"]
PARAMS = {
    "genotype": ([], "genotype.json files (a list; default: the seed-0 and 40k-example SST-2 searches)"),
    "widths": ([64, 96, 128], "cell widths each genotype is built at"),
    "teacher": ("runs/sst2-teacher", "the teacher run timed beside the students (its tokenizer and vocabulary)"),
    "examples": (300, "dev sentences timed at batch 1"),
    "repeat": (3, "batch-128 passes over dev per model"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def untrained(teacher: LoadedModel, genotype: Genotype, label: str, width: int) -> LoadedModel:
    """The genotype's student at ``width`` on the teacher's vocabulary and tokenizer, as a bench subject."""
    genotype.check_width(width, label)
    model = FixedStudent(genotype, kind=teacher.info["kind"], num_labels=int(teacher.info["num_labels"]),
                         vocab_size=len(teacher.tokenizer), max_positions=teacher.max_length, width=width)
    info = {"student": "genotype", "kind": teacher.info["kind"]}
    return LoadedModel(model.eval(), teacher.tokenizer, info, "student", teacher.task, teacher.max_length,
                       Path(f"{label}@w{width}"))


def run(args) -> None:
    paths = [args.genotype] if isinstance(args.genotype, str) else list(args.genotype or DEFAULT_GENOTYPES)
    widths = args.widths if isinstance(args.widths, list) else [args.widths]
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
        raise SystemExit(f"widths takes a list of integers, got {args.widths!r}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no genotype file at {', '.join(missing)}: run `naskd search` first or name others "
                         "with genotype=[...]")
    try:
        teacher = load_model(args.teacher)
    except NaskdError as e:
        raise SystemExit(str(e)) from None
    torch.manual_seed(0)
    models = [teacher] + [untrained(teacher, Genotype.load(p), Path(p).parent.name, w)
                          for p in paths for w in widths]
    threads = torch.get_num_threads()
    subjects = [prepare_model(m, data_dir=args.data_dir, latency_examples=args.examples, throughput_batch=128,
                              onnx=False, threads=threads) for m in models]
    time_interleaved(subjects, repeat=args.repeat, threads=threads)
    rows = [s.row for s in subjects]
    add_ratios(rows)
    cols = ["model", *[c for c in SIZE_AND_SPEED_COLUMNS if c.startswith("torch") or c.startswith("params")
                       or c.startswith("x fewer")]]
    publish("width_speed_sst2", "Untrained students by cell width: size and PyTorch speed against the teacher",
            rows, cols,
            notes=f"{len(subjects[0].singles)} dev sentences at batch 1 (median), {args.repeat} bucketed batch-128 "
                  "passes over dev (median), the models taking turns as in `naskd bench`. Untrained weights: speed "
                  "does not depend on them, but ratios move by up to a quarter between runs on this VM, so read "
                  "this table for the ordering and a width's rough cost; accuracy needs `naskd retrain --width W`.")
