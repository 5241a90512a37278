import json

import optuna

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
