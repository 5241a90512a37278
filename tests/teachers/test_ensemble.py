"""Seed ensembles as teachers (`naskd teacher --ensemble`): the cached outputs are the members' means, every
command that takes --teacher takes one, and bad member lists are refused before any work."""
import json
import shutil

import numpy as np
import pytest

from naskd.cli import main
from naskd.errors import NaskdError

from ..conftest import DATA, TINY_BERT


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_teacher):
    from naskd.teachers.finetune import finetune_teacher, resolve_teacher_config

    second = tmp_path_factory.mktemp("member") / "sst2-teacher-seed7"
    finetune_teacher(resolve_teacher_config({"task": "sst2", "teacher": str(TINY_BERT), "data_dir": str(DATA),
                                             "out": str(second), "epochs": 1, "max_train_examples": 128,
                                             "max_eval_examples": 64, "batch_size": 32, "lr": 1e-4, "seed": 7}))
    return [tiny_teacher[0], second]


def test_ensemble_outputs_are_the_members_means(members, tmp_path, capsys):
    from naskd.data.encode import encode
    from naskd.data.readers import load_split
    from naskd.data.tasks import get_task
    from naskd.teachers.cache import HiddenRequest, TeacherCache
    from naskd.teachers.model import load_teacher, teacher_fingerprint

    ens = tmp_path / "ens"
    assert main(["teacher", "--task", "sst2", "--ensemble", ",".join(map(str, members)), "--data-dir", str(DATA),
                 "--max-eval-examples", "32", "--out", str(ens)]) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    info = json.loads((ens / "teacher.json").read_text())
    assert info["ensemble"] == [str(m.resolve()) for m in members] and not (ens / "model.safetensors").exists()
    spec = get_task("sst2")
    _, tok, _ = load_teacher(ens)
    data = encode(spec, load_split(spec, DATA, "dev").select(range(24)), tok, 64)
    req = [HiddenRequest(1, "cls")]
    cache = TeacherCache(tmp_path / "cache")
    got = cache.get(ens, data, req)
    each = [cache.get(m, data, req) for m in members]
    np.testing.assert_allclose(got.array("logits"), np.mean([e.array("logits") for e in each], 0), atol=1e-5)
    np.testing.assert_allclose(got.array(req[0].item).astype(np.float32),
                               np.mean([e.array(req[0].item).astype(np.float32) for e in each], 0), atol=2e-3)
    fp = teacher_fingerprint(ens)
    assert fp not in {teacher_fingerprint(m) for m in members} and fp == teacher_fingerprint(ens)
    # its dev score is the ensemble's: the mean logits' accuracy on the same rows
    dev = json.loads((ens / "metrics.json").read_text())
    logits = np.load(ens / "dev_logits.npy")
    labels = np.asarray(load_split(spec, DATA, "dev")["label"])
    from naskd.data.readers import subsample

    rows = subsample(len(labels), 32, 42)
    assert dev["dev"]["accuracy"] == pytest.approx(float((logits.argmax(1) == labels[rows]).mean()))
    # a student distils from it like from any teacher; a truncated teacher of it is refused
    assert main(["retrain", "--task", "sst2", "--student", "bilstm_soft", "--bilstm-hidden", "8", "--bilstm-relu",
                 "8", "--bilstm-embed", "16", "--teacher", str(ens), "--data-dir", str(DATA), "--max-train-examples",
                 "32", "--max-eval-examples", "16", "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["retrain", "--task", "sst2", "--student", "truncated_teacher", "--teacher", str(ens), "--data-dir",
                 str(DATA), "--out", str(tmp_path / "r2")]) == 2
    assert "is an ensemble: it has no layers of its own to truncate" in capsys.readouterr().err


def test_bad_ensembles_are_refused_before_any_work(members, tmp_path, capsys):
    one = ["teacher", "--task", "sst2", "--data-dir", str(DATA), "--out", str(tmp_path / "e")]
    odd = tmp_path / "odd"
    shutil.copytree(members[1], odd)
    info = json.loads((odd / "teacher.json").read_text())
    (odd / "teacher.json").write_text(json.dumps({**info, "labels": ["neg", "pos"]}))
    other_tok = tmp_path / "tok"
    shutil.copytree(members[1], other_tok)
    (other_tok / "tokenizer.json").write_text((other_tok / "tokenizer.json").read_text() + "\n")
    cases = [([str(members[0])], "at least two teacher runs"),
             ([str(members[0]), str(members[0])], "lists a teacher run twice"),
             ([str(members[0]), str(odd)], "members differ in labels"),
             ([str(members[0]), str(other_tok)], "different tokenizers"),
             ([str(members[0]), str(tmp_path / "none")], "does not exist")]
    capsys.readouterr()
    assert main(one[:2] + ["rte"] + one[3:] + ["--ensemble", f"{members[0]},{members[1]}"]) == 2
    assert "members are sst2 teachers, not rte" in capsys.readouterr().err
    for listed, message in cases:
        capsys.readouterr()
        assert main(one + ["--ensemble", ",".join(listed)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "e").exists()
    with pytest.raises(NaskdError, match="at least two member"):
        from naskd.teachers.model import read_teacher_info

        broken = tmp_path / "broken"
        broken.mkdir()
        shutil.copy(members[0] / "tokenizer.json", broken / "tokenizer.json")
        (broken / "teacher.json").write_text(json.dumps({**info, "ensemble": [str(members[0])]}))
        read_teacher_info(broken)
