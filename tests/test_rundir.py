"""Issue 19, kinds 1-3 and 9: --overwrite never deletes what naskd did not make or what a command reads;
runs are never replaced without being asked; --resume refuses changed settings; killed runs leave no
temporary files behind; files get the umask's mode."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from naskd.cli import main
from naskd.errors import NaskdError
from naskd.utils.io import atomic_path, clean_stale_temps, save_npy, save_pretrained_atomic, write_json
from naskd.utils.rundir import MARKER, check_output_file, prepare_run_dir, read_marker

from .conftest import DATA
from .students.test_retrain import GENOTYPE, argv, genotype  # noqa: F401 (a fixture)


def tree(root: Path) -> dict:
    """Every file under ``root`` with its bytes (a snapshot to compare before and after)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys, argv) -> str:
    """Run the command; assert exit status 2 with one line on stderr and no traceback; return the line."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def retrain_argv(teacher, genotype, out, *extra):
    """test_retrain's command line, smaller (later flags win)."""
    return argv(teacher, genotype, out, "--max-train-examples", "32", "--max-eval-examples", "16", "--epochs", "1",
                *extra)


@pytest.fixture(scope="module")
def trained(tiny_teacher, tmp_path_factory):
    """A finished retrain run (its student is what `evaluate` reads)."""
    teacher, _ = tiny_teacher
    d = tmp_path_factory.mktemp("trained")
    g = d / "genotype.json"
    g.write_text(json.dumps(GENOTYPE))
    assert main(retrain_argv(teacher, g, d / "run")) == 0
    return d / "run", g


# ---------------------------------------------------------------- kind 1: --overwrite deletes only its own runs

def test_overwrite_refuses_a_users_folder(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    line = refused(capsys, retrain_argv(teacher, genotype, mine, "--overwrite"))
    assert "not a run naskd made" in line and "remove it yourself" in line
    assert tree(tmp_path) == before


def test_overwrite_refuses_the_working_directory(tiny_teacher, genotype, tmp_path, capsys, monkeypatch):
    teacher, _ = tiny_teacher
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    assert "working directory" in refused(capsys, retrain_argv(teacher, genotype, ".", "--overwrite"))
    # an ancestor of the working directory, even one that holds a run marker, is refused too
    write_json(tmp_path / MARKER, {"command": "retrain"})
    before = tree(tmp_path)
    assert "ancestor" in refused(capsys, retrain_argv(teacher, genotype, str(tmp_path), "--overwrite"))
    assert tree(tmp_path) == before


def test_evaluate_cannot_overwrite_the_student_it_reads(trained, tmp_path, capsys):
    run, _ = trained
    before = tree(run)
    evaluate = ["evaluate", "--model", str(run / "student"), "--data-dir", str(DATA), "--overwrite", "--out"]
    assert "which this command reads" in refused(capsys, evaluate + [str(run / "student")])
    assert "contains" in refused(capsys, evaluate + [str(run)])    # the run directory holds the student
    assert tree(run) == before


def test_retrain_cannot_overwrite_its_teacher_or_another_commands_run(tiny_teacher, trained, genotype, tmp_path,
                                                                     capsys):
    teacher, _ = tiny_teacher
    before = tree(teacher)
    line = refused(capsys, retrain_argv(teacher, genotype, teacher, "--overwrite"))
    assert "which this command reads" in line
    assert tree(teacher) == before
    # a teacher run is not replaced by retrain even when retrain does not read it
    other = tmp_path / "teacher-copy"
    other.mkdir()
    for f in teacher.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    before = tree(other)
    line = refused(capsys, retrain_argv(teacher, genotype, other, "--overwrite"))
    assert "naskd teacher run, not a retrain run" in line
    assert tree(other) == before


def test_overwrite_replaces_a_run_of_the_same_command(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    assert main(retrain_argv(teacher, genotype, out, "--stop-after-steps", "1")) == 0
    (out / "stale.txt").write_text("from the earlier run")
    assert main(retrain_argv(teacher, genotype, out, "--overwrite", "--stop-after-steps", "1")) == 0
    assert not (out / "stale.txt").exists() and read_marker(out)["command"] == "retrain"


def test_resume_into_a_folder_that_is_not_a_run_writes_nothing(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "a.jpg").write_bytes(b"\xff\xd8")
    before = tree(tmp_path)
    assert "not a naskd run" in refused(capsys, retrain_argv(teacher, genotype, mine, "--resume"))
    assert tree(tmp_path) == before


def test_out_that_cannot_be_a_directory(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in refused(capsys, retrain_argv(teacher, genotype, f))
    assert "is a file" in refused(capsys, retrain_argv(teacher, genotype, f / "below"))
    with pytest.raises(NaskdError, match="cannot write the run directory"):
        prepare_run_dir("/proc/naskd-run", command="retrain", overwrite=False, resume=False)
    assert f.read_text() == "x"


def test_unwritable_out_is_one_line(tmp_path, monkeypatch):
    # root ignores permission bits, so the read-only file system is simulated where the check asks
    import naskd.utils.rundir as rd

    monkeypatch.setattr(rd.os, "access", lambda path, mode: False)
    with pytest.raises(NaskdError, match="not writable"):
        prepare_run_dir(tmp_path / "new", command="retrain", overwrite=False, resume=False)
    assert not (tmp_path / "new").exists()


def test_a_full_disk_while_writing_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr("naskd.cli.cmd_derive", full)
    line = refused(capsys, ["derive", str(tmp_path), "-o", str(tmp_path / "g.json")])
    assert "No space left on device" in line and str(tmp_path / "x") in line


def test_output_file_rules(tmp_path):
    src = tmp_path / "g.json"
    src.write_text("{}")
    with pytest.raises(NaskdError, match="which this command reads"):
        check_output_file(src, overwrite=True, reads=[src])
    with pytest.raises(NaskdError, match="already exists"):
        check_output_file(src, overwrite=False)
    with pytest.raises(NaskdError, match="is a directory"):
        check_output_file(tmp_path, overwrite=True)
    assert check_output_file(tmp_path / "new.png", overwrite=False) == tmp_path / "new.png"


# ---------------------------------------------------------------- kind 2: tune does not replace a study unasked

def test_second_tune_into_the_same_out_is_refused(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "tune"
    args = ["tune", "--task", "sst2", "--genotype", str(genotype), "--teacher", str(teacher), "--data-dir",
            str(DATA), "--out", str(out), "--set", "epochs=1", "--set", "max_train_examples=16", "--set",
            "max_eval_examples=16", "--set", "batch_size=8", "--no-prune", "--trials", "1", "--space", "lr"]
    assert main(args) == 0
    capsys.readouterr()
    before = tree(out)
    assert "already exists" in refused(capsys, args)
    assert "--storage" in refused(capsys, args + ["--resume"])   # an in-memory study cannot be continued
    assert tree(out) == before
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((out / "tune.json").read_text())["trials"][0]["number"] == 0


# ---------------------------------------------------------------- kind 3: --resume with changed settings

def test_resume_with_changed_settings_is_refused_before_work(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    base = retrain_argv(teacher, genotype, out, "--epochs", "2")
    assert main(base + ["--stop-after-steps", "2"]) == 0
    config = (out / "config.yaml").read_bytes()
    checkpoint = (out / "checkpoint.pt").read_bytes()
    line = refused(capsys, base + ["--resume", "--lr", "0.05", "--max-train-examples", "100"])
    assert "lr 0.001 -> 0.05" in line and "max_train_examples 32 -> 100" in line
    assert "kd " in refused(capsys, base + ["--resume", "--kd", "soft_ce=1"])
    assert (out / "config.yaml").read_bytes() == config and (out / "checkpoint.pt").read_bytes() == checkpoint
    # the documented exception: more epochs; recorded in the marker, config.yaml kept as it was
    assert main(base + ["--resume", "--epochs", "3"]) == 0
    assert (out / "config.yaml").read_bytes() == config
    assert yaml.safe_load(config)["epochs"] == 2
    resumes = read_marker(out)["resumes"]
    assert resumes[-1]["changed"]["epochs"] == [2, 3]
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 3


def test_resume_of_a_run_of_another_command_is_refused(tiny_teacher, genotype, capsys):
    teacher, _ = tiny_teacher
    line = refused(capsys, retrain_argv(teacher, genotype, teacher, "--resume"))
    assert "naskd teacher run, not a retrain run" in line


def test_a_run_made_before_markers_resumes_after_the_same_comparison(tiny_teacher, genotype, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "old"
    base = retrain_argv(teacher, genotype, out, "--epochs", "2")
    assert main(base + ["--stop-after-steps", "2"]) == 0
    (out / MARKER).unlink()                               # as an older naskd left it
    assert "lr 0.001 -> 0.05" in refused(capsys, base + ["--resume", "--lr", "0.05"])
    assert main(base + ["--resume"]) == 0
    assert read_marker(out)["command"] == "retrain"
    assert main(base + ["--overwrite"]) == 0              # adopted: now a run naskd knows


# ---------------------------------------------------------------- kind 9: leftovers and permissions

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from naskd.utils.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"x" * 100000)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writers_temp_file_is_removed_on_the_next_run(tiny_teacher, genotype, tmp_path):
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    base = retrain_argv(teacher, genotype, out, "--epochs", "2")
    assert main(base + ["--stop-after-steps", "2"]) == 0
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out / "checkpoint.pt")])
    assert p.returncode == -signal.SIGKILL
    left = [f for f in out.iterdir() if f.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].stat().st_size == 100000
    # a live process's temporary file is not touched
    with atomic_path(out / "other.bin") as live:
        live.write_bytes(b"y")
        assert main(base + ["--resume"]) == 0
        assert live.exists()
    assert not any(f.name.endswith(".tmp") for f in out.rglob("*"))


def test_clean_stale_temps_keeps_other_hosts_and_unrelated_files(tmp_path):
    dead = tmp_path / ".a.npy.naskd~otherhost~1~x.tmp"
    dead.write_text("x")
    mine = tmp_path / ".b.tmp"                            # not a naskd temporary name
    mine.write_text("x")
    assert clean_stale_temps(tmp_path) == []
    assert dead.exists() and mine.exists()


def test_cache_entry_temp_arrays_of_a_killed_labelling_are_removed(tiny_teacher, tmp_path):
    from naskd.data.encode import encode
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task
    from naskd.teachers.cache import TeacherCache
    from naskd.teachers.model import load_teacher

    teacher, _ = tiny_teacher
    _, tok, _ = load_teacher(teacher)
    spec = get_task("sst2")
    data = encode(spec, {k: v[:8] for k, v in read_columns(spec, DATA, "dev").items()}, tok, 32)
    cache = TeacherCache(tmp_path / "cache")
    folder = cache.root / cache.key(teacher, data)
    folder.mkdir(parents=True)
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder / "logits.npy")])
    assert p.returncode == -signal.SIGKILL and any(folder.iterdir())
    cache.get(teacher, data)
    assert sorted(f.name for f in folder.iterdir() if f.name.endswith(".tmp") or ".tmp." in f.name) == []
    assert (folder / "logits.npy").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_npy(tmp_path / "b.npy", [1.0, 2.0])
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    want = plain.stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for f in ("a.json", "b.npy"):
        assert (tmp_path / f).stat().st_mode & 0o777 == want, f


def test_npy_and_tokenizer_files_are_replaced_whole(tmp_path, monkeypatch):
    import numpy as np
    from transformers import AutoTokenizer

    from .conftest import TINY_BERT

    save_npy(tmp_path / "dev_logits.npy", np.zeros(3))
    real_save = np.save

    def torn(f, arr, *a, **k):
        f.write(b"\x93NUMPY half")
        raise OSError("killed")

    monkeypatch.setattr(np, "save", torn)
    with pytest.raises(OSError):
        save_npy(tmp_path / "dev_logits.npy", np.ones(3))
    monkeypatch.setattr(np, "save", real_save)
    assert np.load(tmp_path / "dev_logits.npy").tolist() == [0.0, 0.0, 0.0]
    assert [f.name for f in tmp_path.iterdir()] == ["dev_logits.npy"]

    tok = AutoTokenizer.from_pretrained(str(TINY_BERT))
    save_pretrained_atomic(tok, tmp_path / "student")
    before = tree(tmp_path / "student")
    def killed_midway(self, d, **k):
        (Path(d) / "vocab.txt").write_text("x")
        raise OSError("killed")

    monkeypatch.setattr(type(tok), "save_pretrained", killed_midway)
    with pytest.raises(OSError):
        save_pretrained_atomic(tok, tmp_path / "student")
    assert tree(tmp_path / "student") == before
    assert AutoTokenizer.from_pretrained(str(tmp_path / "student")).vocab_size == tok.vocab_size


def test_a_storage_password_is_never_written_into_the_run_settings():
    import dataclasses

    from naskd.utils.rundir import run_settings

    @dataclasses.dataclass
    class Cfg:
        storage: str = "postgresql://user:secret@db.example/naskd"
        lr: float = 1e-3

    s = run_settings(Cfg())
    assert "secret" not in str(s) and s["storage"] == "postgresql://user:***@db.example/naskd"
    assert run_settings(Cfg(storage=None))["storage"] is None
