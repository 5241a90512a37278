"""`naskd augment`: generate Tang et al.'s synthetic examples once, label them with the teacher once.

Run directory: ``config.yaml``; ``data/part-NNNNN.parquet`` (columns ``text``, ``text_pair`` for pairs,
``source_idx``: the training-split row each was made from), written after generation with
``data/generated.json``; ``metrics.json``. Generation is fast and deterministic, so it runs whole; the
teacher labels the parts one by one through the teacher output cache, so memory stays bounded and a run
killed midway resumes from its last finished part (a finished part is a cache hit). Search and retrain
read the result with ``--augmented RUN_DIR``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from .. import config as C
from ..data.encode import encode
from ..data.readers import load_split, subsample
from ..data.tasks import TAGGING, get_task
from ..errors import ConfigError, NaskdError
from ..utils.io import atomic_path, write_json, write_text
from ..utils.rundir import check_run_dir, prepare_run_dir, reads_of, run_settings
from ..utils.progress import bar
from .generate import AugmentSettings, augment_texts
from .pos import default_tagger


@dataclass
class AugmentConfig:
    task: str = C.field("sst2", help="task whose training split is augmented")
    teacher: Optional[str] = C.field(None, help="teacher run directory (default runs/<task>-teacher)")
    data_dir: Optional[str] = C.field(None, help="data root or task folder; default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-augment)")
    cache_dir: Optional[str] = C.field(None, help="teacher output cache")
    n_iter: Optional[int] = C.field(None, help="synthetic draws per example (default 20; 10 for training "
                                               "splits over 100k examples)", low=1)
    p_mask: float = C.field(0.1, help="probability of replacing a word by [MASK]", low=0, high=1)
    p_pos: float = C.field(0.1, help="probability of replacing a word by another of its part of speech", low=0, high=1)
    p_ng: float = C.field(0.25, help="probability of keeping only a random n-gram (n in 1..5)", low=0, high=1)
    pos_corpus: Optional[str] = C.field(None, help="POS-tagged corpus, CoNLL columns 'word POS ...' (default "
                                                   "<data-dir>/conll2000/train.txt, else spaCy)")
    pos_tagger: str = C.field("context", help="context: a CRF tagger (python-crfsuite) trained on the corpus tags "
                                              "each sentence in context, replacements drawn from the task's own "
                                              "words of the tag; lexicon: each word's most frequent tag in the "
                                              "corpus, replacements from the corpus (words it lacks never replaced)",
                              choices=["context", "lexicon"])
    kd: str = C.field("logit_mse", help="criteria whose teacher states are cached with the logits (others are "
                                        "added on demand by search/retrain)")
    layers: int = C.field(6, help="cells of the students to be trained (pkd's layer map decides the states cached)",
                          low=1)
    seed: int = C.field(0, help="generation seed", range=C.SEED)
    max_train_examples: Optional[int] = C.field(None, help="augment a seeded subsample of the training split", low=1)
    data_seed: int = C.field(0, help="seed of that subsample (matches search/retrain's --data-seed)", range=C.SEED)
    max_length: Optional[int] = C.field(None, help="maximum sub-tokens (default: the teacher's recipe)", low=8)
    chunk_size: int = C.field(50000, help="synthetic examples labelled per part (bounds memory; the resume unit)",
                              low=1)
    batch_size: int = C.field(256, help="teacher inference batch size", low=1)
    device: str = C.field("auto", help="auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after labelling N parts, as if interrupted",
                                              low=1)
    show: int = C.field(5, help="synthetic examples printed at the end", low=0)

    def validate(self) -> None:
        spec = get_task(self.task)
        if spec.kind == TAGGING:
            raise ConfigError(f"augmentation rewrites sentences for sentence tasks; {spec.name} is a tagging task")
        self.settings(100).check()     # numbers: their fields' declared ranges, checked by naskd.config.resolve
        from ..distill import parse_kd

        parse_kd(self.kd)

    def settings(self, n_train: int) -> AugmentSettings:
        n_iter = self.n_iter if self.n_iter is not None else (10 if n_train > 100_000 else 20)
        return AugmentSettings(n_iter=n_iter, p_mask=self.p_mask, p_pos=self.p_pos, p_ng=self.p_ng)


def resolve_augment_config(flags: dict, config_file: str | None = None) -> AugmentConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    return C.resolve(AugmentConfig, file_layer, flags, source_names=[f"config {config_file}", "command-line flags"])


def _teacher_run(spec, teacher) -> Path:
    from ..teachers.model import read_teacher_info

    path = Path(teacher) if teacher else Path("runs") / f"{spec.name}-teacher"
    if not (path / "teacher.json").is_file():
        raise NaskdError(f"no teacher run at {path}: augmentation is labelled by the task's teacher; create it "
                         f"with `naskd teacher --task {spec.name}` or pass --teacher RUN_DIR")
    read_teacher_info(path, spec.name)
    return path


def part_paths(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "data").glob("part-*.parquet"))


def read_part(path: Path) -> dict:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pydict()


def encode_part(spec, cols: dict, tokenizer, max_length: int):
    """A synthetic part as an Encoded split: no gold labels (``has_label`` False)."""
    n = len(cols["text"])
    cols = dict(cols)
    cols["idx"] = cols["source_idx"]
    cols["label"] = [0.0] * n if spec.kind == "regression" else [0] * n
    data = encode(spec, cols, tokenizer, max_length)
    data.has_label = np.zeros(n, dtype=bool)
    return data


def run_augment(cfg: AugmentConfig, *, overwrite: bool = False, resume: bool = False) -> dict:
    from transformers import AutoTokenizer

    from ..distill import DistillationLoss
    from ..distill.context import kd_context
    from ..teachers.cache import TeacherCache
    from ..teachers.model import read_teacher_info
    from ..utils.runtime import pick_device

    t_start = time.time()
    spec = get_task(cfg.task)
    out = Path(cfg.out or f"runs/{spec.name}-augment")
    guard = dict(command="augment", overwrite=overwrite, resume=resume, reads=reads_of(cfg),
                 settings=run_settings(cfg))
    check_run_dir(out, **guard)               # before any work (the POS tagger may be trained next)
    teacher_dir = _teacher_run(spec, cfg.teacher)
    info = read_teacher_info(teacher_dir, spec.name)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    lowercase = bool(getattr(tokenizer, "do_lower_case", True))
    tagger = default_tagger(cfg.pos_corpus, cfg.data_dir, lowercase=lowercase, cache_dir=_cache_root(cfg),
                            kind=cfg.pos_tagger)
    train = load_split(spec, cfg.data_dir, "train")
    train = train.select(subsample(len(train), cfg.max_train_examples, cfg.data_seed))
    settings = cfg.settings(len(train))
    # the hidden states the chosen criteria need for a student of --layers cells
    kd = DistillationLoss(cfg.kd, kd_context(spec, info, cfg.layers, int(info["hidden_size"])))
    requests = kd.teacher_requests()
    run_dir = prepare_run_dir(out, **guard)
    if not resume:                            # the record of what ran: never rewritten by a resume
        write_text(run_dir / "config.yaml", yaml.safe_dump({**C.to_dict(cfg), "teacher": str(teacher_dir),
                                                            "n_iter_used": settings.n_iter}, sort_keys=False))
    done = run_dir / "data" / "generated.json"
    if done.is_file():
        gen = json.loads(done.read_text())
        print(f"[augment] {gen['kept']:,} synthetic examples already generated in {run_dir / 'data'}", flush=True)
    else:
        gen = _generate(cfg, spec, train, tagger, settings, run_dir)
    max_length = cfg.max_length if cfg.max_length is not None else int(info.get("recipe", {}).get("max_length", 128))
    cache = TeacherCache(cfg.cache_dir)
    device = pick_device(cfg.device)
    parts = part_paths(run_dir)
    total = gen["kept"]
    print(f"[augment] labelling {total:,} synthetic examples with the teacher in {len(parts)} parts (parts "
          f"already in the cache are skipped; cached items: logits{''.join(', ' + r.item for r in requests)})",
          flush=True)
    # one part in memory at a time: a million sentences stay bounded, and a killed run loses one part at most
    pbar = bar(total, "teacher labels", unit="ex")
    label_seconds = 0.0                      # tokenising and labelling of the parts labelled here
    new = parts_here = 0
    stopped = False
    for k, p in enumerate(parts):
        t0 = time.perf_counter()
        data = encode_part(spec, read_part(p), tokenizer, max_length)
        if cache.has(teacher_dir, data, requests):
            pbar.update(len(data))
            continue
        if cfg.stop_after_steps is not None and parts_here >= cfg.stop_after_steps:
            stopped = True
            break
        cache.get(teacher_dir, data, requests, device=device, batch_size=cfg.batch_size, split=f"augment part {k}")
        new += len(data)
        parts_here += 1
        label_seconds += time.perf_counter() - t0
        pbar.update(len(data))
    pbar.close()
    prev = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    label_total = prev.get("label_seconds", 0.0) + label_seconds
    labelled_total = prev.get("labelled_examples_timed", 0) + new
    metrics = {"command": "augment", "task": spec.name, "status": "stopped" if stopped else "finished",
               "teacher": str(teacher_dir), "original_examples": len(train), "n_iter": settings.n_iter,
               "p_mask": settings.p_mask, "p_pos": settings.p_pos, "p_ng": settings.p_ng, **gen,
               "parts": len(parts), "tagger": tagger.describe(), "label_seconds": round(label_total, 1),
               "labelled_examples_timed": labelled_total,
               "label_rate_per_s": round(labelled_total / label_total, 1) if label_total > 0 else None,
               "wall_seconds_this_process": round(time.time() - t_start, 1)}
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _cache_root(cfg) -> Path:
    from ..utils.cachedir import default_cache_dir

    return default_cache_dir(cfg.cache_dir)


def _generate(cfg, spec, train, tagger, settings, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    texts = train["text"]
    pairs = train["text_pair"] if spec.is_pair else None
    pbar = bar(len(texts), "augment", unit="ex")
    cols, stats = augment_texts(texts, pairs, train["idx"], tagger, settings, seed=cfg.seed, progress=pbar)
    pbar.close()
    seconds = time.perf_counter() - t0
    if not cols["text"]:
        raise NaskdError("augmentation produced no synthetic example (every draw was a duplicate or empty); "
                         "raise --p-mask / --p-pos / --n-iter")
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    n = len(cols["text"])
    for k, start in enumerate(range(0, n, cfg.chunk_size)):
        table = pa.table({c: v[start:start + cfg.chunk_size] for c, v in cols.items()})
        with atomic_path(data_dir / f"part-{k:05d}.parquet") as tmp:
            pq.write_table(table, str(tmp))
    words = max(1, stats["words"])
    gen = {"kept": n, "drawn": stats["drawn"], "duplicates_dropped": stats["duplicates"],
           "empty_dropped": stats["empty"], "effective_mask_rate": stats["masked"] / words,
           "effective_pos_replacement_rate": stats["pos_replaced"] / words,
           "pos_draws_on_unknown_words": stats["pos_unknown"] / words,
           "ngram_rate": stats["ngram"] / max(1, stats["perturbed"]),
           "requested": {"p_mask": settings.p_mask, "p_pos": settings.p_pos, "p_ng": settings.p_ng},
           "tagger": tagger.describe(), "generation_seconds": round(seconds, 2),
           "generation_rate_per_s": round(stats["drawn"] / seconds, 1) if seconds > 0 else None}
    write_json(data_dir / "generated.json", gen)
    print(f"[augment] generated {n:,} synthetic examples from {len(texts):,} in {seconds:.1f} s; effective rates: "
          f"mask {gen['effective_mask_rate']:.3f}, POS replacement {gen['effective_pos_replacement_rate']:.3f} "
          f"(+{gen['pos_draws_on_unknown_words']:.3f} drawn on words the tagger does not know, kept), n-gram "
          f"{gen['ngram_rate']:.3f}; {gen['duplicates_dropped']:,} duplicates dropped", flush=True)
    return gen


def examples(run_dir, k: int = 5) -> list[dict]:
    parts = part_paths(run_dir)
    if not parts:
        return []
    cols = read_part(parts[0])
    return [{c: cols[c][i] for c in cols} for i in range(min(k, len(cols["text"])))]
