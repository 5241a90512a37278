import json

import pytest
import torch
from safetensors.torch import load_file

import naskd
from naskd.cli import main
from naskd.data.encode import collate, encode
from naskd.data.readers import read_columns
from naskd.data.tasks import get_task
from naskd.errors import NaskdError

from ..conftest import DATA

GENOTYPE = {"format": 1, "space": "tiny", "ops": ["conv3", "identity", "attn4", "lstm", "none"],
            "aggregators": ["max_pool", "dynamic_routing"], "nodes": 2, "layers": 2, "width": 16, "shared": True,
            "cells": [[[["conv3", 0], ["lstm", 1]], [["attn4", 1], ["identity", 2]]]],
            "aggregator": "dynamic_routing"}


@pytest.fixture()
def genotype(tmp_path):
    f = tmp_path / "genotype.json"
    f.write_text(json.dumps(GENOTYPE))
    return f


def argv(teacher, genotype, out, *extra):
    return ["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(genotype),
            "--data-dir", str(DATA), "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "2",
            "--batch-size", "8", "--out", str(out), "--checkpoint-every", "0", *extra]


def test_retrain_save_load_identical_outputs(tiny_teacher, genotype, tmp_path):
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    assert main(argv(teacher, genotype, out)) == 0
    model, tok, info = naskd.load_student(out / "student")
    assert info["genotype"]["cells"] == GENOTYPE["cells"] and info["task"] == "sst2"
    spec = get_task("sst2")
    dev = encode(spec, {k: v[:6] for k, v in read_columns(spec, DATA, "dev").items()}, tok, 128)
    b = collate(dev, list(range(6)))
    with torch.no_grad():
        a1 = model(**b)["logits"]
        model2, _, _ = naskd.load_student(out)  # the run directory works too
        a2 = model2(**b)["logits"]
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    # the exported weights hold the student only, no criterion projections
    saved = set(load_file(str(out / "student/model.safetensors")))
    assert saved == set(model.state_dict()) and not any(k.startswith(("kd", "criteria")) for k in saved)
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished" and m["parameters"] > m["parameters_without_embeddings"] > 0


def test_retrain_resume_equals_uninterrupted(tiny_teacher, genotype, tmp_path):
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(argv(teacher, genotype, full)) == 0
    assert main(argv(teacher, genotype, part, "--stop-after-steps", "5")) == 0
    assert main(argv(teacher, genotype, part, "--resume")) == 0
    a, b = load_file(str(full / "student/model.safetensors")), load_file(str(part / "student/model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_retrain_ema_saves_the_scored_average(tiny_teacher, genotype, tmp_path, capsys):
    """--ema: the saved student is the weight average that was scored (its dev logits are the saved ones),
    the raw weights' accuracy is logged beside it, and an impossible decay is refused."""
    import numpy as np

    teacher, _ = tiny_teacher
    out = tmp_path / "ema"
    assert main(argv(teacher, genotype, out, "--ema", "0.9")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert all("raw_accuracy" in h and "accuracy" in h for h in m["history"])
    model, tok, _ = naskd.load_student(out)
    spec = get_task("sst2")
    cols = read_columns(spec, DATA, "dev")
    saved = np.load(out / "dev_logits.npy")
    from naskd.data.readers import subsample

    rows = subsample(len(cols["label"]), 32, 0)          # the run's seeded dev subsample
    dev = encode(spec, {k: [v[i] for i in rows] for k, v in cols.items()}, tok, 128)
    b = collate(dev, list(range(len(saved))))
    with torch.no_grad():
        logits = model(**b)["logits"].numpy()
    np.testing.assert_allclose(logits, saved, rtol=0, atol=1e-5)
    # the raw weights (kept in the checkpoint) are not what was saved
    ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    raw = ck["modules"]["model"]
    assert any(not torch.equal(raw[k], v) for k, v in model.state_dict().items())
    capsys.readouterr()
    assert main(argv(teacher, genotype, tmp_path / "bad", "--ema", "1.0")) == 2
    assert "setting 'ema' must be a finite number in (0, 1), got 1.0" in capsys.readouterr().err


def test_retrain_init_continues_from_a_trained_student(tiny_teacher, genotype, tmp_path, capsys):
    """--init: the second stage starts from the first stage's saved weights (at lr 0 it scores exactly what
    the first stage saved); another architecture or task is refused before any work."""
    import numpy as np

    teacher, _ = tiny_teacher
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(argv(teacher, genotype, first)) == 0
    assert main(argv(teacher, genotype, second, "--init", str(first), "--epochs", "1", "--lr", "0",
                     "--kd", "soft_ce=0.5,hard_ce=0.5,fsd=1")) == 0
    np.testing.assert_array_equal(np.load(second / "dev_logits.npy"), np.load(first / "dev_logits.npy"))
    a, b = load_file(str(first / "student/model.safetensors")), load_file(str(second / "student/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(argv(teacher, genotype, tmp_path / "w", "--init", str(first), "--width", "8")) == 2
    err = capsys.readouterr().err
    assert "differs from this one" in err and "width 16 there, 8 here" in err
    assert not (tmp_path / "w").exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**GENOTYPE, "aggregator": "max_pool"}))
    assert main(argv(teacher, other, tmp_path / "g", "--init", str(first))) == 2
    assert "another genotype" in capsys.readouterr().err
    assert main(argv(teacher, genotype, tmp_path / "n", "--init", str(tmp_path / "nothing"))) == 2
    assert "not a naskd student directory" in capsys.readouterr().err


def test_retrain_epoch_examples(tiny_teacher, genotype, tmp_path, capsys):
    """--epoch-examples: each epoch trains on that many rows and is scored on dev; resuming replays it."""
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("--epochs", "3", "--epoch-examples", "40")       # 3 x 40 rows out of 64: five batches each
    assert main(argv(teacher, genotype, full, *extra)) == 0
    log = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "eval" in r] == [0, 1, 2]
    m = json.loads((full / "metrics.json").read_text())
    assert m["steps"] == 15 and m["epochs_done"] == 3
    assert main(argv(teacher, genotype, part, *extra, "--stop-after-steps", "7")) == 0
    assert main(argv(teacher, genotype, part, *extra, "--resume")) == 0
    a, b = load_file(str(full / "student/model.safetensors")), load_file(str(part / "student/model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    capsys.readouterr()
    assert main(argv(teacher, genotype, tmp_path / "bad", "--epoch-examples", "0")) == 2
    assert "setting 'epoch_examples' must be an integer >= 1, got 0" in capsys.readouterr().err


def test_retrain_embed_width_round_trip(tiny_teacher, genotype, tmp_path, capsys):
    """--embed-width: tables of that width (the tiny teacher's 128, PCA-projected to 24), a linear map to the
    cell width 16; saved and loaded with identical outputs; the map counts as non-embedding parameters."""
    teacher, _ = tiny_teacher
    out = tmp_path / "e"
    assert main(argv(teacher, genotype, out, "--epochs", "1", "--embed-width", "24")) == 0
    model, tok, info = naskd.load_student(out)
    assert info["embed_width"] == 24 and model.embeddings.word.embedding_dim == 24
    assert tuple(model.embeddings.up.weight.shape) == (16, 24)
    m = json.loads((out / "metrics.json").read_text())
    plain = naskd.load_student(out)[0]
    from naskd.network import count_parameters

    total, emb = count_parameters(plain)
    assert m["parameters_without_embeddings"] == total - emb
    assert sum(p.numel() for p in model.embeddings.up.parameters()) == 16 * 24 + 16
    spec = get_task("sst2")
    dev = encode(spec, {k: v[:5] for k, v in read_columns(spec, DATA, "dev").items()}, tok, 128)
    b = collate(dev, list(range(5)))
    with torch.no_grad():
        torch.testing.assert_close(model(**b)["logits"], plain(**b)["logits"], rtol=0, atol=0)
    capsys.readouterr()
    assert main(["retrain", "--task", "sst2", "--teacher", str(teacher), "--student", "bilstm_soft",
                 "--embed-width", "24", "--data-dir", str(DATA), "--out", str(tmp_path / "b")]) == 2
    assert "--bilstm-embed" in capsys.readouterr().err


def test_bad_genotype_inputs(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**GENOTYPE, "cells": [[[["warp", 0]], [["conv3", 1]]]]}))
    assert main(argv(teacher, bad, tmp_path / "o")) == 2
    assert "op 'warp' is not in the op table" in capsys.readouterr().err
    assert main(argv(teacher, genotype, tmp_path / "o", "--width", "18")) == 2
    assert "cannot be built at width 18" in capsys.readouterr().err
    assert main(argv(teacher, tmp_path / "none.json", tmp_path / "o")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_student_errors(tmp_path):
    with pytest.raises(NaskdError, match="not a naskd student directory"):
        naskd.load_student(tmp_path)


def test_analyze_cka(tiny_teacher, genotype, tmp_path, capsys):
    import numpy as np

    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    assert main(argv(teacher, genotype, out, "--epochs", "1")) == 0
    assert main(["analyze", "cka", "--model", str(out / "student"), "--teacher", str(teacher), "--data-dir",
                 str(DATA), "--max-eval-examples", "100", "--batch-size", "16", "--layerwise",
                 "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "cka.json").read_text())
    m = np.asarray(res["matrix"])
    assert m.shape == (6, 6) and res["examples_used"] == 96  # 100 // 16 full batches
    assert ((m >= -1e-9) & (m <= 1 + 1e-9)).all()
    assert res["diagonal_mean"] == pytest.approx(np.trace(m) / 6, abs=1e-5)
    # issue 22: Nguyen et al.'s mini-batch estimator (unbiased HSIC summed over the 6 batches) and the
    # CKA of all 96 examples at once; tests/distill/test_references.py checks both against references
    assert np.isfinite(res["minibatch_cka"]) and 0.0 <= res["full_cka"] <= 1.0
    assert "Nguyen" in res["minibatch_estimator"]
    assert np.asarray(res["layerwise"]["matrix"]).shape == (3, 3)  # student states 0..2, teacher 0..2
    printed = capsys.readouterr().out
    assert "CKA diagonal mean" in printed and f"mini-batch CKA {res['minibatch_cka']:.4f}" in printed
    assert main(["analyze", "cka", "--model", str(out / "student"), "--teacher", str(teacher), "--data-dir",
                 str(DATA), "--batch-size", "3", "--out", str(tmp_path / "c")]) == 2
    assert "--batch-size must be an integer >= 4" in capsys.readouterr().err
    assert main(["analyze", "cka", "--model", str(out / "student"), "--teacher", str(teacher), "--task", "rte",
                 "--data-dir", str(DATA), "--out", str(tmp_path / "b")]) == 2


def test_retrain_with_missing_data_leaves_no_run_directory(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    args = argv(teacher, genotype, out)
    args[args.index("--data-dir") + 1] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    assert main(args) == 2
    assert "SST-2" in capsys.readouterr().err and not out.exists()
