import json

import optuna
import pytest

from naskd.cli import main

from .conftest import DATA
from .students.test_retrain import GENOTYPE


def test_tune_shares_a_sqlite_study_and_resumes(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    db = f"sqlite:///{tmp_path / 'tune.db'}"
    args = ["tune", "--task", "sst2", "--genotype", str(g), "--teacher", str(teacher), "--data-dir", str(DATA),
            "--storage", db, "--study-name", "t", "--out", str(tmp_path / "tune"), "--set", "epochs=2",
            "--set", "max_train_examples=32", "--set", "max_eval_examples=32", "--set", "batch_size=16",
            "--set", "checkpoint_every=0", "--no-prune"]
    assert main(args + ["--trials", "2"]) == 0
    assert main(args + ["--trials", "3"]) == 2          # not without being asked
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--trials", "3", "--resume"]) == 0   # continues the stored study: one more trial
    study = optuna.load_study(study_name="t", storage=db)
    assert len(study.trials) == 3
    res = json.loads((tmp_path / "tune/tune.json").read_text())
    assert res["best_value"] == max(t.value for t in study.trials)
    lrs = {t.params["lr"] for t in study.trials}
    assert len(lrs) == 3 and all(1e-4 <= x <= 3e-3 for x in lrs)
    assert (tmp_path / "tune/trial-0002/student/student.json").is_file()
    assert "[tune] best accuracy" in capsys.readouterr().out


def test_tune_bad_input(tmp_path, capsys):
    assert main(["tune", "--space", "lr,colour", "--genotype", "g.json", "--out", str(tmp_path)]) == 2
    assert "unknown tuning dimensions ['colour']" in capsys.readouterr().err
    assert main(["tune", "--set", "epochs", "--out", str(tmp_path)]) == 2
    assert "--set expects key=value" in capsys.readouterr().err
    assert main(["tune", "--set", "epoch=3", "--genotype", "g.json", "--out", str(tmp_path)]) == 2
    assert "unknown setting 'epoch'" in capsys.readouterr().err


def test_tune_teacher_stage_chooses_on_a_selection_split(tmp_path, capsys):
    """Each trial fine-tunes the tiny BERT, scored twice an epoch on rows carved from train; the study's best is
    the best selection score, and every trial's dev score is recorded beside it, not chosen on."""
    from .conftest import TINY_BERT

    out = tmp_path / "tune"
    assert main(["tune", "--stage", "teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(DATA),
                 "--trials", "2", "--space", "lr,epochs,layer_lr_decay", "--set", "max_train_examples=80",
                 "--set", "max_eval_examples=32", "--set", "selection_examples=24", "--set", "batch_size=16",
                 "--set", "checkpoint_every=0", "--no-prune", "--out", str(out)]) == 0
    res = json.loads((out / "tune.json").read_text())
    assert res["stage"] == "teacher" and res["chosen_on"] == "selection split"
    done = [t for t in res["trials"] if t["state"] == "COMPLETE"]
    assert res["best_value"] == max(t["value"] for t in done) and all("accuracy" in t["dev"] for t in done)
    for t in done:
        run = out / f"trial-{t['number']:04d}"
        info = json.loads((run / "teacher.json").read_text())
        m = json.loads((run / "metrics.json").read_text())
        assert info["selection"]["accuracy"] == t["value"] and info["dev"] == t["dev"] == m["dev"]
        assert len(m["history"]) == 2 * t["params"]["epochs"]          # two scorings an epoch
        assert m["train_examples"] == 80       # the 24 whole rows (and their phrases) are carved before it
        assert 0.6 <= t["params"]["layer_lr_decay"] <= 1.0
    assert main(["tune", "--stage", "teacher", "--genotype", "g.json", "--out", str(tmp_path / "x")]) == 2
    assert "--genotype is for --stage retrain" in capsys.readouterr().err
    assert main(["tune", "--stage", "teacher", "--space", "lr,kd", "--out", str(tmp_path / "y")]) == 2
    assert "unknown tuning dimensions ['kd'] for --stage teacher" in capsys.readouterr().err


def test_layer_wise_learning_rates(tiny_random_bert):
    """Encoder layer i of L at lr x d^(L-1-i), the embeddings at lr x d^L, the head at lr; no decay on norms."""
    from transformers import AutoModel

    from naskd.data.tasks import get_task
    from naskd.teachers.finetune import TeacherConfig, _parameter_groups
    from naskd.teachers.model import TeacherModel

    model = TeacherModel(AutoModel.from_pretrained(str(tiny_random_bert)), "single", 2, "mean")
    cfg = TeacherConfig(lr=1e-3, layer_lr_decay=0.5, weight_decay=0.01)
    groups = _parameter_groups(model, cfg, get_task("sst2"))
    rate = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(rate) == sum(1 for _ in model.parameters())
    for name, p in model.named_parameters():
        lr, wd = rate[id(p)]
        if ".layer.0." in name:
            want = 1e-3 * 0.5 ** 1
        elif ".layer.1." in name:
            want = 1e-3
        elif "embeddings" in name:
            want = 1e-3 * 0.5 ** 2
        else:
            want = 1e-3                        # the head
        assert lr == pytest.approx(want), name
        assert wd == (0.0 if name.endswith(("bias", "LayerNorm.weight")) else 0.01), name
    one = _parameter_groups(model, TeacherConfig(lr=1e-3), get_task("sst2"))
    assert {g["lr"] for g in one} == {1e-3}
