"""`naskd augment` end to end with the tiny teacher: parts on disk, labelling resumed after an
interruption without labelling a part twice, and students trained on original + synthetic data."""
import functools
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from naskd.cli import main

from ..conftest import DATA

GENOTYPE = {"format": 1, "space": "tiny", "ops": ["conv3", "identity", "none"], "aggregators": ["max_pool"],
            "nodes": 1, "layers": 1, "width": 16, "shared": True, "cells": [[[["conv3", 0], ["identity", 1]]]],
            "aggregator": "max_pool"}


@functools.lru_cache(maxsize=None)
def small_corpus() -> Path:
    """The first 300 sentences of CoNLL-2000's train file: the context tagger trains on them in seconds
    (the whole file takes over a minute; tests/augment/test_generate.py checks that tagger on it)."""
    text = (DATA / "conll2000/train.txt").read_text(encoding="utf-8")
    f = Path(tempfile.mkdtemp(prefix="naskd-test-pos-")) / "conll2000-300.txt"
    f.write_text("\n\n".join(text.split("\n\n")[:300]) + "\n", encoding="utf-8")
    return f


def argv(teacher, out, *extra):
    return ["augment", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA), "--out", str(out),
            "--max-train-examples", "40", "--n-iter", "4", "--chunk-size", "50", "--pos-corpus",
            str(small_corpus()), *extra]


def _passes(cache_root):
    return sum(len(json.loads(m.read_text())["passes"]) for m in cache_root.glob("*/meta.json"))


def test_augment_writes_parts_and_resumes_labelling(tiny_teacher, tmp_path, capsys, monkeypatch):
    teacher, _ = tiny_teacher
    cache = tmp_path / "cache"
    monkeypatch.setenv("NASKD_CACHE_DIR", str(cache))
    full = tmp_path / "full"
    assert main(argv(teacher, full)) == 0
    m = json.loads((full / "metrics.json").read_text())
    assert m["status"] == "finished" and 40 < m["kept"] <= 160 and m["parts"] == -(-m["kept"] // 50)
    assert 0.05 < m["effective_mask_rate"] < 0.15 and 0.05 < m["effective_pos_replacement_rate"] < 0.15
    assert m["pos_draws_on_unknown_words"] == 0 and m["requested"] == {"p_mask": 0.1, "p_pos": 0.1, "p_ng": 0.25}
    assert "CRF tagger (python-crfsuite)" in m["tagger"]
    rows = sum(pq.read_table(str(p)).num_rows for p in sorted((full / "data").glob("part-*.parquet")))
    assert rows == m["kept"]
    assert "(from row" in capsys.readouterr().out                   # examples printed
    # interrupted after one part, then resumed: the result is the same and no part is labelled twice
    cache2 = tmp_path / "cache2"
    monkeypatch.setenv("NASKD_CACHE_DIR", str(cache2))
    part = tmp_path / "part"
    assert main(argv(teacher, part, "--stop-after-steps", "1")) == 0
    assert json.loads((part / "metrics.json").read_text())["status"] == "stopped"
    assert _passes(cache2) == 1
    assert main(argv(teacher, part, "--resume")) == 0
    assert _passes(cache2) == m["parts"]
    assert json.loads((part / "metrics.json").read_text())["status"] == "finished"
    for a, b in zip(sorted((full / "data").glob("*.parquet")), sorted((part / "data").glob("*.parquet"))):
        assert pq.read_table(str(a)).to_pydict() == pq.read_table(str(b)).to_pydict()


def test_augment_bad_input(tmp_path, capsys):
    assert main(["augment", "--task", "sst2", "--data-dir", str(DATA), "--p-mask", "0.7", "--p-pos", "0.5",
                 "--out", str(tmp_path / "a")]) == 2
    assert "at most 1" in capsys.readouterr().err
    assert main(["augment", "--task", "sst2", "--data-dir", str(DATA), "--teacher", str(tmp_path / "none"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "no teacher run" in capsys.readouterr().err
    assert main(["augment", "--task", "conll2000", "--data-dir", str(DATA), "--out", str(tmp_path / "c")]) == 2
    assert "tagging task" in capsys.readouterr().err


def test_retrain_on_augmented_data(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    aug = tmp_path / "aug"
    assert main(argv(teacher, aug)) == 0
    n_syn = json.loads((aug / "metrics.json").read_text())["kept"]
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    common = ["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(g), "--data-dir", str(DATA),
              "--max-train-examples", "40", "--max-eval-examples", "16", "--epochs", "1", "--batch-size", "16"]
    assert main(common + ["--augmented", str(aug), "--out", str(tmp_path / "r")]) == 0
    m = json.loads((tmp_path / "r/metrics.json").read_text())
    assert m["train_examples"] == 40 + n_syn
    # only synthetic rows made from the kept originals are used: a 20-row subsample of the same seed
    # keeps fewer
    assert main(common[:-6] + ["--max-train-examples", "20", "--max-eval-examples", "16", "--epochs", "1",
                               "--augmented", str(aug), "--out", str(tmp_path / "r2")]) == 0
    assert 20 < json.loads((tmp_path / "r2/metrics.json").read_text())["train_examples"] < 40 + n_syn
    # with a teacher-free criterion there is nothing to learn from synthetic rows
    assert main(common + ["--augmented", str(aug), "--kd", "hard_ce", "--out", str(tmp_path / "r3")]) == 2
    assert "needs a distillation criterion that uses the teacher" in capsys.readouterr().err


def test_hard_label_terms_skip_synthetic_rows():
    import torch

    from naskd.data.tasks import get_task
    from naskd.distill import CRITERIA, KDContext

    crit = CRITERIA["hard_ce"](KDContext(get_task("sst2"), 2, 8, 2, 8))
    logits = torch.randn(4, 2)
    labels = torch.tensor([0, 1, 0, 1])
    keep = torch.tensor([True, False, True, False])
    got = crit({"logits": logits}, {}, {"labels": labels, "has_label": keep})
    want = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(got, want)
    assert float(crit({"logits": logits}, {}, {"labels": labels, "has_label": torch.zeros(4, dtype=torch.bool)})) == 0
