"""Pack what the students_sst2 studies (`benchmarks/run.py`, kind benchmarks/kinds/students_sst2.py) need to
retrain width-64 genotype students on a lent GPU machine that has no Hub, no `../shared` and room for 64 MiB
of files, and the driver that runs them there.

The kit (written to .kit/, which git ignores) holds:
- data/glue/SST-2/{train,dev}.tsv, copied from the data directory;
- teacher/: the teacher run without its weights (teacher.json, config.json, the tokenizer) and a
  model.safetensors holding only its embedding tables already projected onto the students' embedding width
  (`naskd.network.width_projection`, the PCA the student's init does; on the device the projection of an
  already-narrow table is the identity, so the students start from the same numbers), plus the real
  teacher's fingerprint, under which the teacher outputs are cached;
- cache/: the cached teacher outputs (logits) of the training split and of the augmented parts;
- runs/: the search's genotype and metrics, the augment run, and one finished searched run's config and
  metrics (the random students' parameter floor).

The code and the study configs (benchmarks/run.py, benchmarks/kinds/, benchmarks/studies/) are not packed:
they travel with the working tree the lent machine gets (tracked files and untracked ones git does not
ignore), and the kit (.kit/, ignored) goes with them as a carried path.

On the device: `python benchmarks/device_kit.py --drive -- STUDY [--set KEY=VALUE ...] [--only STAGE]` (the
arguments of `python benchmarks/run.py`, e.g. `students_sst2_allx8of200k-aug-kd-logit_mse --set train_seed=3
--only searched`) sets the cache and data directories (the kit's data: the default `data_dir` of every kind),
makes the cache key use the real teacher's fingerprint, and runs the study through benchmarks/run.py.

Measured on an H100 (2026-11-23, the seed-0 genotype, batch 32, fp32): 14-16 steps/s for one process, no
faster than one CPU thread here (the step is a few hundred small kernels); eight processes side by side ran
12.7 steps/s each with the GPU 98% busy, so a lent GPU runs seeds in parallel rather than faster.

Usage (here): python benchmarks/device_kit.py [--embed-width 64] [--runs-like searched-allx8of200k-aug-kd-logit_mse]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

KIT = Path(".kit")


def build(args) -> None:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from naskd.network import teacher_embedding_tables, width_projection
    from naskd.pipeline import prepare
    from naskd.teachers import cache as cache_mod
    from naskd.teachers.model import teacher_fingerprint

    if KIT.exists():
        shutil.rmtree(KIT)
    teacher = Path(args.teacher)
    # data
    src = Path(args.data_dir) / "glue" / "SST-2"
    dst = KIT / "data" / "glue" / "SST-2"
    dst.mkdir(parents=True)
    for f in ("train.tsv", "dev.tsv"):
        shutil.copy(src / f, dst / f)
    # teacher without weights, embeddings projected
    t = KIT / "teacher"
    t.mkdir()
    for f in ("teacher.json", "config.json"):
        shutil.copy(teacher / f, t / f)
    AutoTokenizer.from_pretrained(str(teacher)).save_pretrained(str(t))
    tables = teacher_embedding_tables(teacher)
    W = tables["word"].float()
    proj, how = width_projection(W, args.embed_width)
    slim = {"embeddings.word_embeddings.weight": (W @ proj).contiguous(),
            "embeddings.position_embeddings.weight": (tables["position"].float() @ proj).contiguous(),
            "embeddings.token_type_embeddings.weight": (tables["segment"].float() @ proj).contiguous()}
    save_file(slim, str(t / "model.safetensors"))
    (t / "fingerprint.txt").write_text(teacher_fingerprint(teacher))
    print(f"[kit] embeddings {tuple(W.shape)} -> {tuple(slim['embeddings.word_embeddings.weight'].shape)} ({how})")
    # the cache folders the training rows use (logits only)
    used = []
    real_get = cache_mod.TeacherCache.get

    def spy(self, teacher_dir, data, hidden=(), **kw):
        out = real_get(self, teacher_dir, data, hidden, **kw)
        used.append(out.folder)
        return out

    cache_mod.TeacherCache.get = spy
    prepare("sst2", teacher, data_dir=args.data_dir, max_train_examples=None, max_eval_examples=None, seed=0,
            requests=[], augmented=args.augmented)
    for folder in used:
        (KIT / "cache" / folder.name).mkdir(parents=True)
        shutil.copy(folder / "logits.npy", KIT / "cache" / folder.name / "logits.npy")
    print(f"[kit] {len(used)} cache folders")
    # run skeletons
    r = KIT / "runs"
    search = Path(args.search)
    (r / search.name).mkdir(parents=True)
    for f in ("genotype.json", "metrics.json", "config.yaml"):
        shutil.copy(search / f, r / search.name / f)
    shutil.copytree(args.augmented, r / Path(args.augmented).name)
    like = Path(args.runs) / args.runs_like
    (r / "sst2-students" / like.name).mkdir(parents=True)
    for f in ("config.yaml", "metrics.json"):
        shutil.copy(like / f, r / "sst2-students" / like.name / f)
    size = sum(p.stat().st_size for p in KIT.rglob("*") if p.is_file())
    print(f"[kit] {size / 2**20:.1f} MiB in {KIT}")


def drive(argv: list[str]) -> int:
    """On the device: the kit's runs in place, the cache keyed by the real teacher, then the study (``argv``:
    benchmarks/run.py's arguments)."""
    Path("runs").mkdir(exist_ok=True)
    for p in (KIT / "runs").iterdir():
        dst = Path("runs") / p.name
        if not dst.exists():
            shutil.copytree(p, dst)
    t = Path("runs/sst2-teacher")
    if not t.exists():
        shutil.copytree(KIT / "teacher", t)
    os.environ["NASKD_CACHE_DIR"] = str((KIT / "cache").resolve())
    os.environ.setdefault("NASKD_DATA_DIR", str((KIT / "data").resolve()))
    fp = (t / "fingerprint.txt").read_text().strip()
    from naskd.teachers import cache as cache_mod
    from naskd.teachers import model as model_mod

    model_mod.teacher_fingerprint = cache_mod.teacher_fingerprint = lambda d: fp
    # the runner after NASKD_DATA_DIR is set: it is the default data_dir of every kind (benchmarks/kinds/common.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run as runner

    return runner.main(argv)


def main() -> None:
    if "--drive" in sys.argv:
        i = sys.argv.index("--drive")
        rest = sys.argv[i + 1:]
        sys.exit(drive(rest[1:] if rest[:1] == ["--"] else rest))
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="runs/sst2-teacher")
    ap.add_argument("--search", default="runs/sst2-search-seed0")
    ap.add_argument("--augmented", default="runs/sst2-augment")
    ap.add_argument("--runs", default="runs/sst2-students")
    ap.add_argument("--runs-like", default="searched-allx8of200k-aug-kd-logit_mse")
    ap.add_argument("--embed-width", type=int, default=64)
    ap.add_argument("--data-dir", default=os.environ.get("NASKD_DATA_DIR", "../shared/data"))
    build(ap.parse_args())


if __name__ == "__main__":
    main()
