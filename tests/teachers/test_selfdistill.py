"""Self-distilled teachers (`naskd teacher --distill-from RUN --augmented AUG`): the teacher's outputs are the
targets on original + synthetic rows, the result is a teacher run every command takes, a killed run resumes
exactly, and foreign inputs are refused before any work."""
import json
import shutil

import numpy as np
import pytest
import yaml

from naskd.cli import main

from ..augment.test_augment_run import small_corpus
from ..conftest import DATA, TINY_BERT


@pytest.fixture(scope="module")
def augmented(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd") / "aug"
    assert main(["augment", "--task", "sst2", "--teacher", str(tiny_teacher[0]), "--data-dir", str(DATA), "--out",
                 str(out), "--max-train-examples", "40", "--n-iter", "4", "--pos-corpus", str(small_corpus())]) == 0
    return out


def argv(teacher, aug, out, *extra):
    return ["teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--distill-from", str(teacher), "--augmented",
            str(aug), "--data-dir", str(DATA), "--max-train-examples", "40", "--max-eval-examples", "32",
            "--epochs", "2", "--batch-size", "16", "--checkpoint-every", "1", "--out", str(out), *extra]


def test_self_distilled_teacher_trains_on_the_teachers_outputs_and_resumes(tiny_teacher, augmented, tmp_path,
                                                                          capsys):
    teacher = tiny_teacher[0]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(argv(teacher, augmented, full)) == 0
    out = capsys.readouterr().out
    kept = json.loads((augmented / "metrics.json").read_text())["kept"]
    m = json.loads((full / "metrics.json").read_text())
    assert "40 original + " in out and m["train_examples"] > 40 and m["train_examples"] <= 40 + kept
    info = json.loads((full / "teacher.json").read_text())
    assert info["distilled_from"] == str(teacher) and info["recipe"]["kd"] == "soft_ce=1"
    # killed after 3 steps (inside epoch 1), resumed: the same weights' dev logits
    assert main(argv(teacher, augmented, part, "--stop-after-steps", "3")) == 0
    assert main(argv(teacher, augmented, part, "--resume")) == 0
    np.testing.assert_array_equal(np.load(full / "dev_logits.npy"), np.load(part / "dev_logits.npy"))
    # a teacher like any other: a student distils from it
    assert main(["retrain", "--task", "sst2", "--student", "bilstm_soft", "--bilstm-hidden", "8", "--bilstm-relu",
                 "8", "--bilstm-embed", "16", "--teacher", str(full), "--data-dir", str(DATA),
                 "--max-train-examples", "32", "--max-eval-examples", "16", "--epochs", "1",
                 "--out", str(tmp_path / "r")]) == 0


def test_foreign_inputs_are_refused_before_any_work(tiny_teacher, augmented, tmp_path, capsys):
    teacher = tiny_teacher[0]
    other = tmp_path / "other-aug"
    shutil.copytree(augmented, other)
    conf = yaml.safe_load((other / "config.yaml").read_text())
    (other / "config.yaml").write_text(yaml.safe_dump({**conf, "teacher": str(tmp_path / "another-teacher")}))
    cases = [(argv(teacher, other, tmp_path / "a"), "was labelled by the teacher"),
             (argv(teacher, augmented, tmp_path / "b", "--task", "rte"), "is a teacher of sst2, not rte"),
             (["teacher", "--task", "sst2", "--augmented", str(augmented), "--data-dir", str(DATA), "--out",
               str(tmp_path / "c")], "--augmented is for --distill-from"),
             (argv(teacher, augmented, tmp_path / "d", "--ensemble", f"{teacher},{teacher}"), "not both")]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / args[args.index("--out") + 1].split("/")[-1]).exists()
