"""Sequence labelling end to end on real CoNLL-2000 data with the tiny BERT: a BERT-CRF teacher, a CRF
supernet searched with sub-structure KD, retrained students, evaluation on a CoNLL file."""
import json

import numpy as np
import pytest
import torch

import naskd
from naskd.cli import main
from naskd.data.encode import collate, encode
from naskd.data.readers import load_split, read_columns, subsample
from naskd.data.tasks import get_task
from naskd.teachers.cache import TeacherCache
from naskd.teachers.model import load_teacher

from .conftest import DATA, TINY_BERT

SPACE_YAML = "name: tiny\nops: [conv3, identity, lstm, none]\naggregators: [max_pool]\nnodes: 2\nwidth: 16\n"


@pytest.fixture(scope="module")
def tagging_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("tagteacher") / "conll2000-teacher"
    assert main(["teacher", "--task", "conll2000", "--teacher", str(TINY_BERT), "--data-dir", str(DATA),
                 "--out", str(out), "--epochs", "2", "--max-train-examples", "160", "--max-eval-examples", "60",
                 "--batch-size", "16", "--lr", "1e-3", "--crf-lr", "5e-2", "--checkpoint-every", "0"]) == 0
    return out


def test_teacher_crf_learns_and_decodes_valid_iob2(tagging_teacher):
    m = json.loads((tagging_teacher / "metrics.json").read_text())
    assert m["dev"]["f1"] > 0.3                      # far above chance for 23 tags after 2 small epochs
    model, tok, info = load_teacher(tagging_teacher)
    assert info["kind"] == "tagging" and model.crf.trans.shape == (23, 23)
    spec = get_task("conll2000")
    cols = read_columns(spec, DATA, "dev")
    dev = encode(spec, {k: v[:8] for k, v in cols.items()}, tok, 256)
    b = collate(dev, list(range(8)))
    with torch.no_grad():
        out = model(**b)
        tags, _ = model.crf.viterbi(out["logits"], b["word_mask"])
    assert tags.shape == b["labels"].shape and (tags[~b["word_mask"]] == 0).all()


def test_cache_holds_per_word_emissions(tagging_teacher, tmp_path):
    _, tok, _ = load_teacher(tagging_teacher)
    spec = get_task("conll2000")
    cols = read_columns(spec, DATA, "dev")
    data = encode(spec, {k: v[:10] for k, v in cols.items()}, tok, 256)
    outs = TeacherCache(tmp_path).get(tagging_teacher, data, [])
    assert outs.logits.shape == (sum(len(w) for w in data.word_starts), 23)
    padded = outs.logits_for(np.arange(3))
    assert padded.shape[:2] == (3, max(len(data.word_starts[i]) for i in range(3)))


@pytest.mark.parametrize("kd", ["substructure", "kbest", "struct_kd", "hard_ce", "substructure_emission,pkd=0.1"])
def test_search_and_retrain_tagging(tagging_teacher, tmp_path, kd):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE_YAML)
    s = tmp_path / "s"
    assert main(["search", "--task", "conll2000", "--teacher", str(tagging_teacher), "--data-dir", str(DATA),
                 "--space", str(space), "--layers", "2", "--max-train-examples", "48", "--max-eval-examples", "24",
                 "--batch-size", "8", "--epochs", "2", "--kd", kd, "--out", str(s)]) == 0
    g = json.loads((s / "genotype.json").read_text())
    assert g["aggregator"] is None and g["layers"] == 2
    assert "f1" in json.loads((s / "metrics.json").read_text())["dev"]
    r = tmp_path / "r"
    assert main(["retrain", "--task", "conll2000", "--teacher", str(tagging_teacher), "--genotype",
                 str(s / "genotype.json"), "--data-dir", str(DATA), "--max-train-examples", "48",
                 "--max-eval-examples", "24", "--batch-size", "8", "--epochs", "2", "--kd", kd, "--out", str(r)]) == 0
    model, _, info = naskd.load_student(r)
    assert info["kind"] == "tagging" and model.crf is not None
    # the best epoch's dev Viterbi paths are kept for span-level paired comparisons, and score as reported
    from naskd.stats import f1_from_counts, span_counts

    spec = get_task("conll2000")
    pred = json.loads((r / "dev_predictions.json").read_text())
    dev = load_split(spec, DATA, "dev")
    dev = dev.select(subsample(len(dev), 24, 0))          # retrain's seeded dev subsample (data seed 0)
    gold = [[spec.labels[t] for t in s] for s in dev["tags"]]
    assert [len(g) for g in gold] == [len(p) for p in pred]
    dev_f1 = json.loads((r / "metrics.json").read_text())["dev"]["f1"]
    assert abs(f1_from_counts(span_counts(gold, pred).sum(0)) - dev_f1) < 1e-9


def test_truncated_teacher_and_conll_file_evaluation(tagging_teacher, tmp_path, capsys):
    r = tmp_path / "t"
    assert main(["retrain", "--task", "conll2000", "--teacher", str(tagging_teacher), "--student",
                 "truncated_teacher", "--data-dir", str(DATA), "--max-train-examples", "32",
                 "--max-eval-examples", "16", "--epochs", "1", "--out", str(r)]) == 0
    assert json.loads((r / "student/student.json").read_text())["layers"] == 1
    # a CoNLL file: the first sentences of the training file
    lines = (DATA / "conll2000/train.txt").read_text().split("\n\n")[:12]
    f = tmp_path / "few.txt"
    f.write_text("\n\n".join(lines) + "\n")
    assert main(["evaluate", "--model", str(tagging_teacher), "--file", str(f), "--out", str(tmp_path / "e")]) == 0
    m = json.loads((tmp_path / "e/metrics.json").read_text())
    assert m["examples"] == 12 and set(m["metrics"]) == {"precision", "recall", "f1", "truncated_sentences"}
    # a max_length that cuts sentences: the cut words count as "O" predictions against the full gold
    assert main(["evaluate", "--model", str(tagging_teacher), "--file", str(f), "--out", str(tmp_path / "e2"),
                 "--max-length", "12"]) == 0
    m2 = json.loads((tmp_path / "e2/metrics.json").read_text())
    assert m2["metrics"]["truncated_sentences"] == 12 and m2["metrics"]["recall"] < m["metrics"]["recall"]
    p2 = [json.loads(x) for x in (tmp_path / "e2/predictions.jsonl").read_text().splitlines()]
    assert len(p2[0]["pred"]) == len(p2[0]["gold"]) == len(p2[0]["tokens"]) > 12
    p = [json.loads(x) for x in (tmp_path / "e/predictions.jsonl").read_text().splitlines()]
    assert len(p[0]["tokens"]) == len(p[0]["pred"]) == len(p[0]["gold"])
    assert main(["retrain", "--task", "conll2000", "--teacher", str(tagging_teacher), "--student", "bilstm_soft",
                 "--data-dir", str(DATA), "--out", str(tmp_path / "b")]) == 2
    assert "bilstm_soft is a sentence classifier" in capsys.readouterr().err
    assert main(["search", "--task", "conll2000", "--teacher", str(tagging_teacher), "--data-dir", str(DATA),
                 "--kd", "soft_ce", "--out", str(tmp_path / "x")]) == 2
    assert "for the tagging task conll2000 use one of" in capsys.readouterr().err


def test_tagging_export_matches_pytorch(tagging_teacher, tmp_path):
    import onnxruntime as ort

    from naskd.export import example_inputs
    from naskd.modeldir import load_model

    assert main(["export", "--model", str(tagging_teacher), "--format", "onnx", "-o", str(tmp_path / "t.onnx")]) == 0
    loaded = load_model(tagging_teacher)
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert "word_starts" in names
    for batch, length in [(1, 6), (3, 20)]:
        ex = example_inputs(loaded, batch, length)
        with torch.no_grad():
            want = loaded.model(**ex)["logits"].numpy()
        got = sess.run(None, {n: ex[n].numpy() for n in names})[0]
        assert got.shape == want.shape == (batch, 3, 23) and np.abs(got - want).max() < 1e-4


def test_evaluate_words_without_subtokens_keep_their_tags(tagging_teacher, tmp_path):
    """Issue 19, kind 4, end to end: a zero-width space inside a sentence, and a sentence of nothing but
    such words, in a CoNLL file given to `naskd evaluate`. Every word is scored against its own gold tag, the
    dropped word is predicted as the [UNK] stand-in is (the same sentence with a literal "[UNK]" there gets
    the same predictions), nothing is padded, and no sentence is called truncated."""
    from seqeval.metrics import f1_score

    blocks = (DATA / "conll2000/train.txt").read_text().split("\n\n")[:3]
    first = blocks[0].split("\n")
    k = len(first) // 2
    zw = first[:k] + ["\u200b NN O"] + first[k:]
    unk = first[:k] + ["[UNK] NN O"] + first[k:]
    only = ["\u200b NN O", "\u00ad NN O", "\ufeff NN O"]
    f = tmp_path / "zw.txt"
    f.write_text("\n\n".join(["\n".join(zw), "\n".join(unk), "\n".join(only), *blocks[1:]]) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning) as rec:
        assert main(["evaluate", "--model", str(tagging_teacher), "--file", str(f), "--out", str(tmp_path / "e")]) == 0
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith("4 conll2000 word(s) have no sub-tokens") and f"{f}:{k + 1} " in m for m in msgs), msgs
    assert not any("truncated" in m for m in msgs)
    m = json.loads((tmp_path / "e/metrics.json").read_text())
    assert m["examples"] == 5 and m["metrics"]["truncated_sentences"] == 0
    rows = [json.loads(x) for x in (tmp_path / "e/predictions.jsonl").read_text().splitlines()]
    file_sents = [zw, unk, only, *[b.split("\n") for b in blocks[1:]]]
    for r, lines in zip(rows, file_sents):
        assert r["tokens"] == [ln.split()[0] for ln in lines]
        assert r["gold"] == [ln.split()[2] for ln in lines]          # every word keeps its own gold tag
        assert len(r["pred"]) == len(r["gold"])
    assert rows[0]["pred"] == rows[1]["pred"]                        # the [UNK] stand-in, in its own place
    assert rows[2]["gold"] == ["O", "O", "O"] and len(rows[2]["pred"]) == 3
    gold, pred = [r["gold"] for r in rows], [r["pred"] for r in rows]
    assert abs(f1_score(gold, pred, zero_division=0) - m["metrics"]["f1"]) < 1e-12
