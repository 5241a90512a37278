"""Issue 19, kind 6: truncated or corrupt model files, checkpoints and teacher-cache arrays, and Optuna
storage URLs that cannot be opened, end in one line on stderr (exit 2) naming the file and the way out;
never a traceback, never advice to unpickle."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from naskd.cli import main
from naskd.errors import NaskdError

from .conftest import DATA, TINY_BERT
from .students.test_retrain import GENOTYPE


def one_error(capsys, command: str) -> str:
    """The single stderr line of a refused command (asserted: one line, the CLI's prefix, no traceback)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"naskd {command}: error: ") and "Traceback" not in err
    assert "weights_only" not in err and "allow_pickle" not in err        # never advice to unpickle
    return lines[0]


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(how)


@pytest.fixture(scope="module")
def run(tiny_teacher, tmp_path_factory):
    """A finished one-epoch retraining run (checkpoint, student) and its teacher-cache folder."""
    teacher, _ = tiny_teacher
    d = tmp_path_factory.mktemp("corrupt")
    (d / "g.json").write_text(json.dumps(GENOTYPE))
    args = ["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(d / "g.json"), "--data-dir",
            str(DATA), "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "1", "--batch-size",
            "8", "--checkpoint-every", "0", "--cache-dir", str(d / "cache")]
    assert main([*args, "--out", str(d / "run")]) == 0
    return {"dir": d, "args": args, "teacher": teacher}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_corrupt_student_weights(run, tmp_path, capsys, how):
    """A student's model.safetensors cut short or overwritten: export and evaluate name the file and how to
    get it back, before anything is written."""
    student = _copy(run["dir"] / "run/student", tmp_path / "student")
    damage(student / "model.safetensors", how)
    assert main(["export", "--model", str(student), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    msg = one_error(capsys, "export")
    assert f"{student / 'model.safetensors'} is not a readable safetensors file" in msg
    assert "--overwrite" in msg and "retrain" in msg
    assert main(["evaluate", "--model", str(student), "--data-dir", str(DATA), "--out", str(tmp_path / "e")]) == 2
    assert str(student / "model.safetensors") in one_error(capsys, "evaluate")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("name,content,expect", [
    ("student.json", b"\xff\xfe{", "is not UTF-8 JSON"),
    ("student.json", b"[1, 2]", "does not describe a naskd student"),
    ("student.json", b"{}", "lacks task, kind, num_labels"),
    ("tokenizer.json", b'{"version": "1.0", "trunc', "tokenizer.json cannot be read (JSONDecodeError"),
    ("tokenizer.json", b"[1]", "tokenizer.json is not a JSON object"),
])
def test_corrupt_student_files(run, tmp_path, capsys, name, content, expect):
    student = _copy(run["dir"] / "run/student", tmp_path / "student")
    (student / name).write_bytes(content)
    assert main(["export", "--model", str(student), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 2
    assert expect in one_error(capsys, "export")


def test_student_json_with_impossible_sizes(run, tmp_path, capsys):
    student = _copy(run["dir"] / "run/student", tmp_path / "student")
    info = json.loads((student / "student.json").read_text())
    (student / "student.json").write_text(json.dumps({**info, "num_labels": -1}))
    assert main(["export", "--model", str(student), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 2
    assert "num_labels -1 is not a whole number of at least 1" in one_error(capsys, "export")


@pytest.mark.parametrize("name,how,expect", [
    ("model.safetensors", "truncated", "model.safetensors is not a readable safetensors file"),
    ("model.safetensors", "garbage", "model.safetensors is not a readable safetensors file"),
    ("tokenizer.json", "truncated", "tokenizer.json cannot be read"),
    ("config.json", "garbage", "config.json cannot be read"),
])
def test_corrupt_teacher_files(run, tmp_path, capsys, name, how, expect):
    """A damaged teacher run fails retraining at once (before the student is built or the cache filled),
    and export, naming the file and `naskd teacher --out RUN --overwrite`."""
    teacher = _copy(run["teacher"], tmp_path / "teacher")
    damage(teacher / name, how)
    args = [a if a != str(run["teacher"]) else str(teacher) for a in run["args"]]
    assert main([*args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    msg = one_error(capsys, "retrain")
    assert expect in msg and str(teacher) in msg and f"naskd teacher --out {teacher} --overwrite" in msg
    assert not (tmp_path / "c").exists()
    assert main(["export", "--model", str(teacher), "--format", "torchscript", "-o", str(tmp_path / "t.pt")]) == 2
    assert expect in one_error(capsys, "export")


def test_corrupt_base_model_folder(tmp_path, capsys):
    """`naskd teacher --teacher DIR` with a Hugging Face folder whose weights were cut short."""
    base = _copy(TINY_BERT, tmp_path / "base")
    damage(base / "model.safetensors", "truncated")
    assert main(["teacher", "--task", "sst2", "--teacher", str(base), "--data-dir", str(DATA), "--out",
                 str(tmp_path / "t"), "--epochs", "1", "--max-train-examples", "16"]) == 2
    msg = one_error(capsys, "teacher")
    assert f"{base / 'model.safetensors'} is not a readable safetensors file" in msg
    assert "download or copy the model folder again" in msg


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_checkpoint_on_resume(run, tmp_path, capsys, how):
    """`naskd retrain --resume` over a checkpoint.pt cut short or overwritten: one line naming it and
    --overwrite (torch's own message would suggest weights_only=False)."""
    d = _copy(run["dir"] / "run", tmp_path / "run")
    damage(d / "checkpoint.pt", how)
    assert main([*run["args"], "--out", str(d), "--resume"]) == 2
    msg = one_error(capsys, "retrain")
    assert f"checkpoint {d / 'checkpoint.pt'} cannot be read" in msg and "start the run again with --overwrite" in msg


def test_load_checkpoint_refuses_what_is_not_a_checkpoint(tmp_path):
    """Every way a checkpoint file can be wrong, one NaskdError naming it: not a torch file, empty, a pickle of
    arbitrary objects (never unpickled), a torch file of something else, one whose modules do not fit."""
    from naskd.train import LoopState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = tmp_path / "checkpoint.pt"
    parts = dict(modules={"model": model}, optimizers={"main": opt}, schedulers={})
    cases = {
        "empty": (lambda: ck.write_bytes(b""), "cannot be read (EOFError"),
        "text": (lambda: ck.write_text("not a checkpoint"), "cannot be read"),
        "pickle": (lambda: ck.write_bytes(pickle.dumps(os.getcwd)), "holds more than tensors"),
        "list": (lambda: torch.save([1, 2], ck), "is not a naskd training checkpoint (it lacks modules"),
        "other model": (lambda: save_checkpoint(ck, modules={"model": torch.nn.Linear(4, 2)}, optimizers={"main": opt},
                                                schedulers={}, state=LoopState()), "does not fit this run"),
    }
    for name, (write, expect) in cases.items():
        write()
        with pytest.raises(NaskdError) as e:
            load_checkpoint(ck, **parts)
        msg = str(e.value)
        assert expect in msg and str(ck) in msg and "--overwrite" in msg and "\n" not in msg, (name, msg)
        assert "weights_only" not in msg, name
    save_checkpoint(ck, state=LoopState(epoch=1), **parts)            # an intact one still loads
    assert load_checkpoint(ck, **parts)["epoch"] == 1


def _train_entry(cache_dir):
    """The cache entry of the training rows (the one with the most rows: 64 train against 32 dev)."""
    entries = [d for d in cache_dir.iterdir() if d.is_dir()]
    return max(entries, key=lambda d: np.load(d / "logits.npy", mmap_mode="r").shape[0])


def test_corrupt_cache_array_through_retrain(run, tmp_path, capsys):
    """A teacher-cache array cut short (a killed copy, a full disk): retraining names the file and the exact
    entry to delete; once it is deleted the run goes through, recomputing it."""
    cache = _copy(run["dir"] / "cache", tmp_path / "cache")
    entry = _train_entry(cache)
    damage(entry / "logits.npy", "truncated")
    args = [a if a != str(run["dir"] / "cache") else str(cache) for a in run["args"]]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    msg = one_error(capsys, "retrain")
    assert f"teacher output cache file {entry / 'logits.npy'} is unreadable" in msg
    assert f"delete that cache entry (rm -r {entry})" in msg
    shutil.rmtree(entry)
    assert main([*args, "--out", str(tmp_path / "r2")]) == 0
    assert (entry / "logits.npy").is_file()


def test_store_entry_problems_are_reported_by_get(tiny_teacher, tmp_path):
    """TeacherCache.get checks every array it hands out: cut short, garbage, a pickled object array, the wrong
    length, and a corrupt meta.json (read before a teacher pass) are each one NaskdError naming the file."""
    from transformers import AutoTokenizer

    from naskd.data.encode import encode
    from naskd.data.readers import load_split
    from naskd.data.tasks import get_task
    from naskd.teachers.cache import HiddenRequest, TeacherCache

    teacher, _ = tiny_teacher
    spec = get_task("sst2")
    tok = AutoTokenizer.from_pretrained(str(teacher))
    data = encode(spec, load_split(spec, DATA, "dev").select(range(24)), tok, 64)
    cache = TeacherCache(tmp_path / "c")
    req = [HiddenRequest(1, "cls")]
    out = cache.get(teacher, data, req)
    entry = out.folder
    good = {f: (entry / f).read_bytes() for f in ("logits.npy", "h1_cls.npy", "meta.json")}
    cases = [
        ("logits.npy", lambda p: damage(p, "truncated"), "ValueError: truncated or not a .npy array"),
        ("h1_cls.npy", lambda p: damage(p, "garbage"), "truncated or not a .npy array"),
        ("logits.npy", lambda p: damage(p, "empty"), "EOFError"),
        ("logits.npy", lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True), "not a .npy array"),
        ("logits.npy", lambda p: np.save(p, np.zeros((5, 2), np.float32)), "shape (5, 2) float32, expected 24"),
    ]
    for name, spoil, expect in cases:
        spoil(entry / name)
        with pytest.raises(NaskdError) as e:
            cache.get(teacher, data, req)
        msg = str(e.value)
        assert f"{entry / name} is unreadable" in msg and expect in msg and f"rm -r {entry}" in msg, msg
        assert "allow_pickle" not in msg
        (entry / name).write_bytes(good[name])
    # meta.json is read before a teacher pass that would add an item
    (entry / "meta.json").write_text("{not json")
    with pytest.raises(NaskdError, match=r"meta.json is unreadable \(JSONDecodeError: not JSON\); delete that "
                                         r"cache entry"):
        cache.get(teacher, data, req + [HiddenRequest(0, "cls")])
    (entry / "meta.json").write_bytes(good["meta.json"])
    assert np.array_equal(np.asarray(cache.get(teacher, data, req).logits), np.asarray(out.logits))


# ---- Optuna storage URLs ----------------------------------------------------------------------------------------

def _tune(tmp_path, teacher, storage):
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    return main(["tune", "--task", "sst2", "--genotype", str(g), "--teacher", str(teacher), "--data-dir", str(DATA),
                 "--storage", storage, "--out", str(tmp_path / "tune"), "--trials", "1", "--set", "epochs=1",
                 "--set", "max_train_examples=16", "--set", "max_eval_examples=16"])


@pytest.mark.parametrize("storage,expect", [
    ("nonsense", "--storage 'nonsense' is not a database URL; give an Optuna storage URL such as sqlite:///"),
    ("sqlite:////nonexistent/dir/x.db", "the folder /nonexistent/dir does not exist"),
    ("http://example.org/db", "unknown database kind 'http'"),
])
def test_storage_urls_that_cannot_work(tiny_teacher, tmp_path, capsys, storage, expect):
    """Refused in one line before any trial and before the run directory is made."""
    assert _tune(tmp_path, tiny_teacher[0], storage) == 2
    assert expect in one_error(capsys, "tune")
    assert not (tmp_path / "tune").exists()


def test_storage_without_its_driver(tiny_teacher, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("psycopg2") is not None or importlib.util.find_spec("psycopg") is not None:
        pytest.skip("a PostgreSQL driver is installed here")
    assert _tune(tmp_path, tiny_teacher[0], "postgresql+psycopg2://naskd:secret@localhost/studies") == 2
    msg = one_error(capsys, "tune")
    # the missing module named, with what pip installs it as
    assert "the Python driver for postgresql is not installed" in msg and "pip install psycopg2-binary" in msg
    assert "secret" not in msg and "naskd:***@localhost" in msg          # the password is not printed
    assert _tune(tmp_path, tiny_teacher[0], "postgresql://naskd:secret@localhost/studies") == 2
    msg = one_error(capsys, "tune")                                      # SQLAlchemy 2's default: psycopg 3
    assert "No module named 'psycopg'" in msg and "pip install 'psycopg[binary]'" in msg and "secret" not in msg
    assert not (tmp_path / "tune").exists()


def test_storage_that_cannot_be_opened(tmp_path):
    """A URL that parses but whose database cannot be opened (here a folder where the file should be)."""
    from naskd.tune import open_storage

    with pytest.raises(NaskdError, match=r"--storage sqlite:///.* cannot be opened \(unable to open database "
                                         r"file\); check the path"):
        open_storage(f"sqlite:///{tmp_path}")
    assert open_storage(None) is None
    assert open_storage(f"sqlite:///{tmp_path / 'ok.db'}") is not None and (tmp_path / "ok.db").is_file()
