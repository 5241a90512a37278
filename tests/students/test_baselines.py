"""Baseline students: distilled BiLSTM, truncated teacher, random genotypes."""
import json

import numpy as np
import pytest
import torch

import naskd
from naskd.cli import main
from naskd.data.encode import collate, encode
from naskd.data.readers import read_columns
from naskd.data.tasks import PAIR, SINGLE, get_task
from naskd.errors import ConfigError, NaskdError
from naskd.genotype import sample_genotype
from naskd.space import load_space
from naskd.students.baselines import BiLSTMStudent, truncated_teacher
from naskd.students.retrain import resolve_retrain_config
from naskd.teachers.model import load_teacher

from ..conftest import DATA
from .test_retrain import GENOTYPE


def argv(teacher, out, *extra):
    return ["retrain", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA),
            "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "1", "--out", str(out),
            "--checkpoint-every", "0", *extra]


def _dev_batch(tok, n=6):
    spec = get_task("sst2")
    dev = encode(spec, {k: v[:n] for k, v in read_columns(spec, DATA, "dev").items()}, tok, 128)
    return collate(dev, list(range(n)))


def test_bilstm_recipe_is_tang_et_al_and_flags_override(tmp_path):
    cfg = resolve_retrain_config({"student": "bilstm_soft"})
    assert (cfg.kd, cfg.optimizer, cfg.lr, cfg.batch_size) == ("logit_mse", "adadelta", 1.0, 50)
    cfg = resolve_retrain_config({"student": "bilstm_soft", "lr": "0.5", "bilstm_hidden": "300"})
    assert cfg.lr == 0.5 and cfg.bilstm_hidden == 300 and cfg.optimizer == "adadelta"
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    assert resolve_retrain_config({"genotype": str(g)}).optimizer == "adamw"
    with pytest.raises(ConfigError, match="--genotype FILE is required"):
        resolve_retrain_config({})
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_retrain_config({"student": "transformer"})


def test_bilstm_siamese_encodes_each_sentence_alone():
    torch.manual_seed(0)
    m = BiLSTMStudent(vocab_size=50, kind=PAIR, num_labels=2, pair=True, embed=8, hidden=6, relu=5,
                      dropout=0.0).eval()
    a, b = [2, 11, 12, 13, 3], [14, 15, 3]                       # [CLS] a [SEP] / b [SEP]
    ids = torch.tensor([a + b + [0, 0]])
    mask = torch.tensor([[1] * 8 + [0, 0]])
    tt = torch.tensor([[0] * 5 + [1] * 3 + [0, 0]])
    feats = {}
    m.out.register_forward_hook(lambda mod, inp, out: feats.update(x=inp[0]))
    m(ids, mask, tt)
    h1 = m.encode(m.word(torch.tensor([a])), torch.ones(1, 5, dtype=torch.bool))
    h2 = m.encode(m.word(torch.tensor([b])), torch.ones(1, 3, dtype=torch.bool))
    want = m.relu(torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1))
    torch.testing.assert_close(feats["x"], want)


def test_bilstm_single_ignores_padding():
    torch.manual_seed(0)
    m = BiLSTMStudent(vocab_size=50, kind=SINGLE, num_labels=2, pair=False, embed=8, hidden=6, relu=5).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    y1 = m(ids, torch.ones(1, 4))["logits"]
    y2 = m(torch.tensor([[2, 5, 6, 3, 9, 9]]), torch.tensor([[1, 1, 1, 1, 0, 0]]))["logits"]
    torch.testing.assert_close(y1, y2)


def test_truncated_teacher_keeps_the_first_layers(tiny_teacher):
    teacher, _ = tiny_teacher
    full, tok, _ = load_teacher(teacher)
    cut = truncated_teacher(teacher, 1).eval()
    b = _dev_batch(tok)
    with torch.no_grad():
        want = full(**b, output_hidden_states=True)["hidden_states"]
        got = cut(**b)["states"]
    assert len(got) == 2
    for g, w in zip(got, want[:2]):
        torch.testing.assert_close(g, w)
    whole = truncated_teacher(teacher, 2).eval()          # k = M_t: the whole teacher
    with torch.no_grad():
        torch.testing.assert_close(whole(**b)["logits"], full(**b)["logits"], rtol=0, atol=0)
    for k in (0, 3):
        with pytest.raises(NaskdError, match=r"1\.\.2 for a 2-layer teacher"):
            truncated_teacher(teacher, k)


def test_random_genotypes_are_valid_uniform_draws():
    space = load_space("nas_kd")
    rng = np.random.default_rng(0)
    seen_ops, seen_inputs = set(), set()
    for _ in range(200):
        g = sample_genotype(space, layers=3, width=16, rng=rng)
        g.check()
        for i, node in enumerate(g.cell(0)):
            inputs = [j for _, j in node]
            assert len(set(inputs)) == len(inputs) == 2 and all(0 <= j < i + 2 for j in inputs)
            seen_ops |= {op for op, _ in node}
            seen_inputs |= {(i, j) for j in inputs}
    assert seen_ops == set(space.ops) - {"none"}
    assert seen_inputs == {(i, j) for i in range(space.nodes) for j in range(i + 2)}
    a = sample_genotype(space, layers=3, width=16, rng=np.random.default_rng(5))
    assert a == sample_genotype(space, layers=3, width=16, rng=np.random.default_rng(5))


@pytest.mark.parametrize("student,extra,arch", [
    ("bilstm_soft", ["--bilstm-hidden", "8", "--bilstm-relu", "8", "--bilstm-embed", "16"], "bilstm_soft"),
    ("truncated_teacher", [], "truncated_teacher"),
    ("random", ["--layers", "2", "--width", "16", "--sample-seed", "3"], "cell"),
])
def test_baseline_retrain_save_load(tiny_teacher, tmp_path, student, extra, arch):
    teacher, _ = tiny_teacher
    out = tmp_path / student
    assert main(argv(teacher, out, "--student", student, *extra)) == 0
    model, tok, info = naskd.load_student(out)
    assert info["architecture"] == arch and info["student"] == student
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished" and m["student"] == student
    b = _dev_batch(tok)
    model2, _, _ = naskd.load_student(out / "student")
    with torch.no_grad():
        torch.testing.assert_close(model(**b)["logits"], model2(**b)["logits"], rtol=0, atol=0)
    if student == "truncated_teacher":
        assert info["layers"] == 1 and m["parameters_without_embeddings"] > 0


def test_random_min_params_and_truncate_errors(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    small = tmp_path / "small"
    assert main(argv(teacher, small, "--student", "random", "--layers", "1", "--width", "16",
                     "--stop-after-steps", "1")) == 0
    from naskd.genotype import Genotype
    from naskd.students.retrain import _cell_parameters

    g_small = Genotype.from_dict(naskd_yaml(small)["resolved_genotype"])
    floor = _cell_parameters(g_small, 16) + 1          # the same draw no longer qualifies: a redraw
    assert main(argv(teacher, tmp_path / "big", "--student", "random", "--layers", "1", "--width", "16",
                     "--min-params", str(floor), "--stop-after-steps", "1")) == 0
    g_big = Genotype.from_dict(naskd_yaml(tmp_path / "big")["resolved_genotype"])
    assert g_big != g_small and _cell_parameters(g_big, 16) >= floor
    # k = M_t is the whole teacher (the teacher space's deepest member); more layers than it has are refused
    assert main(argv(teacher, tmp_path / "t", "--student", "truncated_teacher", "--truncate-k", "3")) == 2
    assert "2-layer teacher" in capsys.readouterr().err


def naskd_yaml(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_random_student_deeper_than_the_teacher_with_default_pkd(tiny_teacher, tmp_path, capsys):
    """The default criteria (with pkd) on a 4-cell random student of the 2-layer teacher: cells share the
    teacher's layers (m(j) = round(j x 2 / 4)), and the log says which cell learns from which layer."""
    teacher, _ = tiny_teacher
    out = tmp_path / "deep"
    assert main(argv(teacher, out, "--student", "random", "--layers", "4", "--width", "16",
                     "--stop-after-steps", "1")) == 0
    log = capsys.readouterr().out
    assert "[kd] pkd: student cell -> teacher layer 1->1, 2->1, 3->2" in log
