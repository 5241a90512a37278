"""How good is the latency estimate that latency-aware search optimises? For every genotype at hand (the
searched SST-2 students, random ones, a latency-aware search if one ran), the estimate from the op table
against the student's measured batch-1 time over dev sentences (as `naskd bench` measures it), with the
teacher's for scale, and the rank correlation of estimate and measurement.

Usage: python benchmarks/bench_latency.py [--genotypes runs/*/genotype.json ...] [--examples 200]
Run it alone on the machine (timings).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

from naskd.bench import _latencies  # noqa: E402
from naskd.data.encode import collate, encode  # noqa: E402
from naskd.data.readers import load_split, subsample  # noqa: E402
from naskd.data.tasks import get_task  # noqa: E402
from naskd.genotype import Genotype  # noqa: E402
from naskd.search.latency import genotype_latency, profile_latency  # noqa: E402
from naskd.space.spec import load_space  # noqa: E402
from naskd.students.fixed import FixedStudent  # noqa: E402
from naskd.teachers.model import load_teacher  # noqa: E402


def default_genotypes() -> list[str]:
    found = sorted(glob.glob("runs/sst2-search*/genotype.json"))
    found += sorted(glob.glob("runs/sst2-students/random-*-10000x4/config.yaml"))
    return found


def load_genotype(path: str) -> Genotype:
    if path.endswith(".json"):
        return Genotype.load(path)
    import yaml

    return Genotype.from_dict(yaml.safe_load(Path(path).read_text())["resolved_genotype"], path)


def main() -> None:
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser()
    ap.add_argument("--genotypes", nargs="*", default=None)
    ap.add_argument("--teacher", default="runs/sst2-teacher")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--data-dir", default=os.environ.get("NASKD_DATA_DIR", "../shared/data"))
    args = ap.parse_args()
    spec = get_task("sst2")
    teacher, tok, _ = load_teacher(args.teacher)
    teacher.eval()
    dev = encode(spec, load_split(spec, args.data_dir, "dev"), tok, 128)
    singles = [collate(dev, [i]) for i in subsample(len(dev), args.examples, 0)]
    length = int(np.median(dev.lengths))
    space = load_space("nas_kd")
    table = profile_latency(space, width=64, length=length, kind=spec.kind, num_labels=2, vocab_size=len(tok),
                            teacher=teacher)

    def measured(model) -> float:
        model.eval()

        def run(b):
            with torch.inference_mode():
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        return 1e3 * _latencies(run, singles)

    t_ms = measured(teacher)
    rows = [{"model": "teacher", "estimated ms": "", "measured ms": t_ms, "measured / estimated": "",
             "x faster than teacher (measured)": 1.0}]
    est, meas = [], []
    for path in args.genotypes or default_genotypes():
        g = load_genotype(path)
        torch.manual_seed(0)
        model = FixedStudent(g, kind=spec.kind, num_labels=2, vocab_size=len(tok))
        e, m = genotype_latency(g, table), measured(model)
        est.append(e)
        meas.append(m)
        rows.append({"model": f"{path}: {g.describe()}", "estimated ms": e, "measured ms": m,
                     "measured / estimated": m / e, "x faster than teacher (measured)": t_ms / m})
    rho = float(spearmanr(est, meas)[0]) if len(est) > 2 else float("nan")
    ops = ", ".join(f"{k} {v:.3f}" for k, v in table.ops.items() if k != "none")
    aggs = ", ".join(f"{k} {v:.3f}" for k, v in table.aggregators.items())
    publish("latency_estimate", "Latency-aware search: estimated against measured batch-1 time (SST-2 students)",
            rows, ["model", "estimated ms", "measured ms", "measured / estimated", "x faster than teacher (measured)"],
            "python benchmarks/bench_latency.py",
            notes=f"Op table (`naskd search --latency-*` profiles the same way), ms at batch 1 and {length} tokens "
                  f"(the dev median), width 64: {ops}; aggregators {aggs}; skeleton {table.skeleton_ms:.3f} + "
                  f"{table.cell_skeleton_ms:.3f} per cell; teacher at the same length {table.teacher_ms:.3f}. "
                  f"Measured: median over {len(singles)} dev sentences at their own lengths, PyTorch, "
                  f"{torch.get_num_threads()} thread(s). Spearman rank correlation of estimate and measurement: "
                  f"{rho:.3f} over {len(est)} students.")
    print(json.dumps({"spearman": rho}))


if __name__ == "__main__":
    main()
