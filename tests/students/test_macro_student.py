"""Macro students as student directories: save and load, evaluate, export (ONNX, TorchScript), bench."""
import json

import numpy as np
import pytest
import torch

from naskd.cli import main
from naskd.errors import NaskdError
from naskd.export import example_inputs
from naskd.modeldir import load_model
from naskd.space.macro import MacroGenotype
from naskd.students.io import load_student, save_student
from naskd.students.macro import MacroStudent

from ..conftest import DATA, TINY_BERT

GENOTYPE = MacroGenotype("macro", 8, (("dwconv5", 8), ("attn2", 6), ("lstm", 8), ("conv3", 4)), "ends", 5)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_BERT))


def _student(tokenizer, tmp_path, task, kind, pair, pooling="ends"):
    torch.manual_seed(0)
    g = MacroGenotype(GENOTYPE.space, GENOTYPE.embed, GENOTYPE.layers, pooling, GENOTYPE.classifier)
    m = MacroStudent(g, vocab_size=len(tokenizer), kind=kind, num_labels=1 if kind == "regression" else 2,
                     pair=pair).eval()
    path = tmp_path / f"{task}-{pooling}"
    save_student(path, m, tokenizer, task=task, extra={"max_length": 64})
    return m, path


def _pair_inputs(batch, length, seed=0):
    """Rows of several lengths, each two sentences (segment 1 from the middle of its real tokens)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)
    lengths[0] = length
    pos = torch.arange(length)[None]
    mask = (pos < lengths[:, None]).long()
    ids = torch.randint(1000, 2000, (batch, length), generator=g) * mask
    tt = ((pos >= (lengths[:, None] + 1) // 2) & (mask == 1)).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


@pytest.mark.parametrize("task, kind, pair", [("sst2", "single", False), ("rte", "pair", True),
                                              ("stsb", "regression", True)])
def test_save_and_load_give_the_same_student(tokenizer, tmp_path, task, kind, pair):
    m, path = _student(tokenizer, tmp_path, task, kind, pair)
    info = json.loads((path / "student.json").read_text())
    assert info["architecture"] == "macro" and info["genotype"] == GENOTYPE.to_dict() and info["pair"] is pair
    loaded, _, info = load_student(path)
    assert isinstance(loaded, MacroStudent) and loaded.genotype == GENOTYPE and not loaded.training
    ex = _pair_inputs(5, 13)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**ex)["logits"], m(**ex)["logits"], rtol=0, atol=0)
    assert load_model(path).name.startswith("macro")


def test_a_corrupt_genotype_in_student_json_is_one_error(tokenizer, tmp_path):
    _, path = _student(tokenizer, tmp_path, "sst2", "single", False)
    info = json.loads((path / "student.json").read_text())
    info["genotype"]["layers"][1] = ["attn4", 6]
    (path / "student.json").write_text(json.dumps(info))
    with pytest.raises(NaskdError, match=r"student.json: its genotype is not a valid macro genotype: layers\[1\]"):
        load_student(path)
    info["genotype"]["layers"][1] = ["attn2", 6]
    info["pair"] = "yes"
    (path / "student.json").write_text(json.dumps(info))
    with pytest.raises(NaskdError, match="holds a bad value"):
        load_student(path)


@pytest.mark.parametrize("task, kind, pair, pooling", [("sst2", "single", False, "max"),
                                                       ("rte", "pair", True, "ends"),
                                                       ("stsb", "regression", True, "mean")])
def test_onnx_and_torchscript_match_pytorch_at_any_batch_and_length(tokenizer, tmp_path, task, kind, pair, pooling):
    import onnxruntime as ort

    _, path = _student(tokenizer, tmp_path, task, kind, pair, pooling)
    assert main(["export", "--model", str(path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert main(["export", "--model", str(path), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    loaded = load_model(path)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feeds = [i.name for i in sess.get_inputs()]
    assert ("token_type_ids" in feeds) is pair
    ts = torch.jit.load(str(tmp_path / "m.pt"))
    for batch, length in [(1, 3), (5, 17), (12, 40)]:            # other shapes than the traced one
        ex = _pair_inputs(batch, length) if pair else example_inputs(loaded, batch, length)
        with torch.no_grad():
            want = loaded.model(**ex)["logits"].numpy()
            got_ts = ts(ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]).numpy()
        got = sess.run(None, {n: ex[n].numpy() for n in feeds})[0]
        assert got.shape == want.shape == ((batch,) if kind == "regression" else (batch, 2))
        assert np.isfinite(want).all()
        assert np.abs(got - want).max() < 1e-4
        assert np.abs(got_ts - want).max() < 1e-4


def test_evaluate_and_bench_take_a_macro_student(tokenizer, tmp_path):
    _, path = _student(tokenizer, tmp_path, "sst2", "single", False)
    assert main(["evaluate", "--model", str(path), "--data-dir", str(DATA), "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    assert metrics["examples"] == 872 and 0 <= metrics["metrics"]["accuracy"] <= 1
    assert main(["bench", "--model", str(path), "--data-dir", str(DATA), "--latency-examples", "5", "--repeat", "1",
                 "--threads", "1", "--out", str(tmp_path / "b")]) == 0
    (row,) = json.loads((tmp_path / "b/bench.json").read_text())["rows"]
    emb = len(tokenizer) * 8
    assert row["params"] - row["params without embeddings"] == emb
    assert row["params"] == sum(p.numel() for p in load_student(path)[0].parameters())
    assert row["onnx max abs diff"] < 1e-4 and row["torch b1 ms"] > 0
