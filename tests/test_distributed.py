"""Data-parallel retraining and teacher fine-tuning through torchrun (two CPU processes, gloo)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .conftest import DATA, TINY_BERT
from .students.test_retrain import GENOTYPE


def torchrun(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "naskd", *args, "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600)


def test_retrain_with_two_processes(tiny_teacher, tmp_path):
    teacher, _ = tiny_teacher
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    common = ["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(g), "--data-dir", str(DATA),
              "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "2", "--batch-size", "8",
              "--checkpoint-every", "0"]
    r = torchrun(*common, "--out", str(tmp_path / "ddp"), env_extra={"NASKD_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "ddp/metrics.json").read_text())
    # 64 rows in batches of 8 = 8 batches an epoch, 4 per process
    assert m["processes"] == 2 and m["status"] == "finished" and m["steps"] == 8
    assert r.stdout.count("[retrain] sst2:") == 1          # rank 0 alone reports
    saved = load_file(str(tmp_path / "ddp/student/model.safetensors"))
    # stop after 3 steps and resume under torchrun: the same weights as the uninterrupted run
    part = tmp_path / "part"
    assert torchrun(*common, "--out", str(part), "--stop-after-steps", "3",
                    env_extra={"NASKD_CACHE_DIR": str(tmp_path / "c")}).returncode == 0
    r = torchrun(*common, "--out", str(part), "--resume", env_extra={"NASKD_CACHE_DIR": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = load_file(str(part / "student/model.safetensors"))
    for k in saved:
        torch.testing.assert_close(saved[k], resumed[k], rtol=0, atol=0)


def test_teacher_with_two_processes(tmp_path):
    r = torchrun("teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(DATA), "--out",
                 str(tmp_path / "t"), "--epochs", "1", "--max-train-examples", "64", "--max-eval-examples", "32",
                 "--batch-size", "16", "--checkpoint-every", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "t/metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 2 and (tmp_path / "t/model.safetensors").is_file()


def test_search_refuses_torchrun(tmp_path):
    r = torchrun("search", "--task", "sst2", "--data-dir", str(DATA), "--out", str(tmp_path / "s"))
    assert r.returncode != 0 and "naskd search runs in one process" in r.stderr


def test_more_processes_than_gpus_is_refused_before_joining(monkeypatch):
    """torchrun with more processes on a node than it has GPUs: a clear error before the process group is
    joined (NCCL would fail later, on the surplus rank alone, with "invalid device ordinal")."""
    from naskd.errors import NaskdError
    from naskd.utils import dist as ndist

    joined = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(ndist.dist, "init_process_group", lambda *a, **k: joined.append(a))
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(NaskdError, match=r"has 1 GPU: one process per GPU \(--nproc_per_node 1\), or --device cpu"):
        ndist.init("auto")
    assert joined == []
    # --device cpu: the same process joins with gloo and stays on the CPU
    monkeypatch.setattr(ndist.dist, "is_initialized", lambda: False)
    assert ndist.init("cpu") == torch.device("cpu") and joined == [("gloo",)]
