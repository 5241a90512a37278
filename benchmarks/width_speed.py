"""Which width can a genotype afford? Size and speed of untrained students (a genotype at several cell
widths) against the teacher, timed as `naskd bench` times trained ones (dev sentences, models taking
turns, batch 1 and bucketed batch 128), before hours go into retraining one. Speed does not depend on the
weights, so the table predicts the bench's size and speed columns; accuracy needs the retraining.

Usage: python benchmarks/width_speed.py [--genotype runs/sst2-search-seed0/genotype.json ...]
       [--widths 64,96,128] [--teacher runs/sst2-teacher] [--examples 300]
Run it alone on the machine (timings).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

from naskd.bench import SIZE_AND_SPEED_COLUMNS, add_ratios, prepare_model, time_interleaved  # noqa: E402
from naskd.errors import NaskdError  # noqa: E402
from naskd.genotype import Genotype  # noqa: E402
from naskd.modeldir import LoadedModel, load_model  # noqa: E402
from naskd.students.fixed import FixedStudent  # noqa: E402


def untrained(teacher: LoadedModel, genotype: Genotype, label: str, width: int) -> LoadedModel:
    """The genotype's student at ``width`` on the teacher's vocabulary and tokenizer, as a bench subject."""
    genotype.check_width(width, label)
    model = FixedStudent(genotype, kind=teacher.info["kind"], num_labels=int(teacher.info["num_labels"]),
                         vocab_size=len(teacher.tokenizer), max_positions=teacher.max_length, width=width)
    info = {"student": "genotype", "kind": teacher.info["kind"]}
    return LoadedModel(model.eval(), teacher.tokenizer, info, "student", teacher.task, teacher.max_length,
                       Path(f"{label}@w{width}"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--genotype", action="append", default=None,
                    help="genotype.json (repeatable; default: the seed-0 and 40k-example SST-2 searches)")
    ap.add_argument("--widths", default="64,96,128")
    ap.add_argument("--teacher", default="runs/sst2-teacher")
    ap.add_argument("--examples", type=int, default=300, help="dev sentences timed at batch 1")
    ap.add_argument("--repeat", type=int, default=3, help="batch-128 passes over dev per model")
    ap.add_argument("--data-dir", default=os.environ.get("NASKD_DATA_DIR", "../shared/data"))
    args = ap.parse_args()
    paths = args.genotype or ["runs/sst2-search-seed0/genotype.json", "runs/sst2-search-40k/genotype.json"]
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        sys.exit(f"--widths takes comma-separated integers, got {args.widths!r}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        sys.exit(f"no genotype file at {', '.join(missing)}: run `naskd search` first or name others with --genotype")
    try:
        teacher = load_model(args.teacher)
    except NaskdError as e:
        sys.exit(str(e))
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
    command = ("python benchmarks/width_speed.py" + "".join(f" --genotype {p}" for p in paths)
               + f" --widths {args.widths} --examples {args.examples}")
    publish("width_speed_sst2", "Untrained students by cell width: size and PyTorch speed against the teacher",
            rows, cols, command,
            notes=f"{len(subjects[0].singles)} dev sentences at batch 1 (median), {args.repeat} bucketed batch-128 "
                  "passes over dev (median), the models taking turns as in `naskd bench`. Untrained weights: speed "
                  "does not depend on them, but ratios move by up to a quarter between runs on this VM, so read "
                  "this table for the ordering and a width's rough cost; accuracy needs `naskd retrain --width W`.")


if __name__ == "__main__":
    main()
