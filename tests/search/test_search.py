import json

import pytest
import torch

from naskd.cli import main
from naskd.errors import NaskdError
from naskd.genotype import Genotype
from naskd.search.derive import derive

from ..conftest import DATA

SPACE_YAML = """name: tiny
ops: [conv3, identity, attn4, lstm, none]
aggregators: [max_pool, dynamic_routing]
nodes: 2
width: 16
"""


@pytest.fixture()
def space(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(SPACE_YAML)
    return f


def argv(teacher, space, out, *extra):
    return ["search", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA), "--space",
            str(space), "--layers", "2", "--max-train-examples", "64", "--max-eval-examples", "32",
            "--batch-size", "8", "--epochs", "2", "--out", str(out), "--checkpoint-every", "1000", *extra]


def final_alphas(run):
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    return ck["modules"]["model"]["arch.ops"], ck["modules"]["model"]["arch.agg"]


def test_search_end_to_end_writes_run(tiny_teacher, space, tmp_path):
    teacher, _ = tiny_teacher
    out = tmp_path / "s"
    assert main(argv(teacher, space, out)) == 0
    for f in ("genotype.json", "history.json", "metrics.jsonl", "metrics.json", "config.yaml", "checkpoint.pt"):
        assert (out / f).is_file(), f
    g = Genotype.load(out / "genotype.json")
    assert g.layers == 2 and g.width == 16 and g.aggregator in ("max_pool", "dynamic_routing")
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 2 and len(hist[0]["alphas"]["ops"]) == 5  # 5 edges for 2 nodes
    assert hist[0]["genotype"] != hist[1]["genotype"] or hist[0]["alphas"] != hist[1]["alphas"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished" and m["steps"] == 8 and "accuracy" in m["dev"]
    # `naskd derive` re-derives every epoch's genotype from the recorded alphas
    assert derive(out) == g
    assert derive(out, epoch=1).to_dict() == hist[0]["genotype"]
    capped = derive(out, epoch=1, max_identity=0)
    assert all(op != "identity" for node in capped.cell(0) for op, _ in node)
    assert main(["derive", str(out), "--epoch", "1", "--max-identity", "0", "-o", str(tmp_path / "g0.json")]) == 0
    assert Genotype.load(tmp_path / "g0.json") == capped
    assert main(["derive", str(out), "-o", str(tmp_path / "g0.json")]) == 2          # never overwritten silently
    assert Genotype.load(tmp_path / "g0.json") == capped
    with pytest.raises(NaskdError, match="epochs 1 to 2"):
        derive(out, epoch=3)
    with pytest.raises(NaskdError, match="is not a search run with a finished epoch: config.yaml is missing"):
        derive(tmp_path)


def test_resume_equals_uninterrupted(tiny_teacher, space, tmp_path):
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(argv(teacher, space, full)) == 0
    assert main(argv(teacher, space, part, "--stop-after-steps", "3")) == 0
    assert json.loads((part / "metrics.json").read_text())["status"] == "stopped"
    assert main(argv(teacher, space, part, "--resume", "--stop-after-steps", "3")) == 0  # crosses an epoch end
    assert main(argv(teacher, space, part, "--resume")) == 0
    for a, b in zip(final_alphas(full), final_alphas(part)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (Genotype.load(full / "genotype.json") == Genotype.load(part / "genotype.json"))


def test_second_order_and_per_cell(tiny_teacher, space, tmp_path):
    teacher, _ = tiny_teacher
    out = tmp_path / "o2"
    assert main(argv(teacher, space, out, "--order", "2", "--per-cell-alphas", "--epochs", "1",
                     "--kd", "soft_ce=0.5,hard_ce=0.5,pkd=1,fsd=0.1", "--fsd-memory", "4")) == 0
    g = Genotype.load(out / "genotype.json")
    assert len(g.cells) == 2
    assert derive(out) == g
    a, _ = final_alphas(out)
    assert a.shape == (2, 5, 5)


@pytest.mark.parametrize("extra,message", [
    (["--layers", "0"], "setting 'layers' must be an integer >= 1, got 0"),
    (["--nodes", "0"], "setting 'nodes' must be an integer >= 1, got 0"),
    (["--width", "18"], "not divisible by 4 heads"),
    (["--kd", "soft_ce,magic"], "unknown distillation criterion 'magic'"),
    (["--space", "nowhere"], "known: adabert, macro, nas_kd, teacher"),
    (["--task", "rte"], "fine-tuned for task sst2, not rte"),
    (["--kd", "pkd", "--pkd-pairs", "1:7"], "outside student cells"),
])
def test_bad_settings_fail_before_training(tiny_teacher, space, tmp_path, capsys, extra, message):
    teacher, _ = tiny_teacher
    out = tmp_path / "bad"
    assert main(argv(teacher, space, out) + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()


def test_unknown_op_in_space_file(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    f = tmp_path / "bad.yaml"
    f.write_text(SPACE_YAML.replace("lstm", "gru"))
    assert main(argv(teacher, f, tmp_path / "x")) == 2
    assert "unknown op 'gru'" in capsys.readouterr().err


def test_not_a_teacher_run(space, tmp_path, capsys):
    assert main(argv(tmp_path, space, tmp_path / "x")) == 2
    assert "not a teacher run" in capsys.readouterr().err


def test_search_without_a_teacher_run_fine_tunes_one_first(tmp_path, monkeypatch, space, capsys):
    """The README's one command on a fresh machine: no --teacher and no runs/sst2-teacher yet. The recipe
    is swapped for a tiny one (the real one fine-tunes all-MiniLM-L6-v2 for half an hour)."""
    from naskd.teachers import finetune

    from ..conftest import TINY_BERT

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(finetune, "recipe_for", lambda task: (
        {"teacher": str(TINY_BERT), "epochs": 1, "max_train_examples": 64, "max_eval_examples": 32,
         "batch_size": 16, "lr": 1e-4}, None))
    args = ["search", "--task", "sst2", "--data-dir", str(DATA), "--space", str(space), "--layers", "2",
            "--max-train-examples", "32", "--max-eval-examples", "16", "--batch-size", "8", "--epochs", "1",
            "--out", "runs/s"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fine-tuning the default teacher first" in out
    assert (tmp_path / "runs/sst2-teacher/teacher.json").is_file() and (tmp_path / "runs/s/genotype.json").is_file()
    # a second search reuses that teacher run
    assert main(args[:-1] + ["runs/s2"]) == 0
    assert "using the teacher run runs/sst2-teacher" in capsys.readouterr().out


def test_missing_data_fails_before_the_run_directory_is_made(tiny_teacher, space, tmp_path, capsys):
    """A run that cannot find its data leaves nothing behind, so the corrected command runs as typed."""
    teacher, _ = tiny_teacher
    out = tmp_path / "s"
    args = argv(teacher, space, out)
    args[args.index("--data-dir") + 1] = str(tmp_path / "nowhere")
    assert main(args) == 2
    assert "data directory" in capsys.readouterr().err and not out.exists()
