"""Augmentation throughput on SST-2: generation (no teacher) against teacher labelling, one run of
`naskd augment` on a seeded subsample with the default settings. Generation must not be the bottleneck
(at least 10x the labelling rate). Resumable like the command.

Study: `python benchmarks/run.py augment_rates` (benchmarks/results/augment_rates.{md,json}).
"""
from __future__ import annotations

from pathlib import Path

from common import DATA_DIR, publish

PARAMS = {
    "teacher": ("runs/sst2-teacher", "the SST-2 teacher run that labels the synthetic sentences"),
    "max_train_examples": (2000, "the seeded training subsample augmented"),
    "out": ("runs/sst2-augment-bench", "the augment run (resumed when there; augment_study reads the same one)"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def run(args) -> None:
    from naskd.augment.run import resolve_augment_config, run_augment

    out = Path(args.out)
    cfg = resolve_augment_config({"task": "sst2", "teacher": args.teacher, "data_dir": args.data_dir,
                                  "out": str(out), "max_train_examples": args.max_train_examples})
    m = run_augment(cfg, resume=out.is_dir() and any(out.iterdir()))
    gen, lab = m["generation_rate_per_s"], m["label_rate_per_s"]
    rows = [{"stage": "generation (draws/s, no teacher)", "examples": m["drawn"], "seconds": m["generation_seconds"],
             "per second": gen},
            {"stage": "teacher labelling (synthetic examples/s, logits)", "examples": m["labelled_examples_timed"],
             "seconds": m["label_seconds"], "per second": lab}]
    rows[0]["x labelling rate"] = gen / lab if lab else None
    per_example = m["kept"] / m["original_examples"]
    publish("augment_rates", "Augmentation on SST-2: generation against teacher labelling", rows,
            ["stage", "examples", "seconds", "per second", "x labelling rate"],
            notes=f"`naskd augment` defaults (n_iter {m['n_iter']}, p_mask {m['p_mask']}, p_pos {m['p_pos']}, p_ng "
                  f"{m['p_ng']}; POS from {m['tagger']}) on a seeded {m['original_examples']:,}-sentence subsample: "
                  f"{m['kept']:,} synthetic sentences kept ({per_example:.1f} per original; {m['duplicates_dropped']:,} "
                  f"duplicates dropped), so the whole 67,349-sentence training split yields about "
                  f"{per_example * 67349:,.0f}. Effective rates: mask {m['effective_mask_rate']:.3f}, POS "
                  f"replacement {m['effective_pos_replacement_rate']:.3f} (plus {m['pos_draws_on_unknown_words']:.3f} "
                  f"of words drawn for replacement but unknown to the tagger, kept), n-gram {m['ngram_rate']:.3f}.")
