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
    # the rows counted before the stop (3 steps of 2 batches of 8) carry over into the resumed epoch
    assert m["rows_trained_per_epoch"] == [64, 64]
    assert json.loads((part / "metrics.json").read_text())["rows_trained_per_epoch"] == [64, 64]


def test_teacher_with_two_processes(tmp_path):
    r = torchrun("teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(DATA), "--out",
                 str(tmp_path / "t"), "--epochs", "1", "--max-train-examples", "64", "--max-eval-examples", "32",
                 "--batch-size", "16", "--checkpoint-every", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "t/metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 2 and (tmp_path / "t/model.safetensors").is_file()


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


# ---- issue 19, kind 5: every row trained each epoch whatever the world size ----------------------------------

TOY = r'''
import json, sys
from pathlib import Path

import numpy as np
import torch

from naskd.data.encode import bucket_batches
from naskd.train import fit
from naskd.utils import dist

n_rows, batch_size, epochs, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
device = dist.init("cpu")
g = torch.Generator().manual_seed(1)
X = torch.randn(n_rows, 3, generator=g, dtype=torch.float64)
Y = torch.randn(n_rows, generator=g, dtype=torch.float64)
model = torch.nn.Linear(3, 1).double()
with torch.no_grad():
    model.weight.fill_(0.1)
    model.bias.zero_()
seen, epoch = [], [0]

def batches_for_epoch(e):
    epoch[0] = e
    return bucket_batches(np.ones(n_rows, dtype=int), batch_size, seed=0, epoch=e, bucket=False)

def make_batch(rows):
    seen.append((epoch[0], [int(r) for r in rows]))
    return {"rows": torch.as_tensor(np.asarray(rows))}

def loss_fn(batch, progress):
    r = batch["rows"]
    return ((model(X[r]).squeeze(-1) - Y[r]) ** 2).mean(), {}

out.mkdir(parents=True, exist_ok=True)
res = fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None, epochs=epochs,
          batches_for_epoch=batches_for_epoch, make_batch=make_batch, loss_fn=loss_fn,
          evaluate=lambda: {"m": 0.0}, main_metric="m", run_dir=out, device=device, grad_clip=None,
          checkpoint_every=0, desc="toy")
(out / f"rank{dist.rank()}.json").write_text(json.dumps({
    "seen": seen, "steps": res.state.global_step, "rows_per_epoch": res.state.rows_per_epoch,
    "weight": model.weight.detach().reshape(-1).tolist(), "bias": model.bias.detach().tolist()}))
dist.shutdown()
dist.exit_process(0)
'''


def _toy_reference(n_rows, batch_size, epochs, world):
    """Plain SGD where each step's gradient is the mean of the per-batch mean-loss gradients of one round of
    ``world`` consecutive batches (the last round holding what is left): what data-parallel fit() promises."""
    import numpy as np

    from naskd.data.encode import bucket_batches

    g = torch.Generator().manual_seed(1)
    X = torch.randn(n_rows, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(n_rows, generator=g, dtype=torch.float64)
    w = torch.full((1, 3), 0.1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for e in range(epochs):
        batches = bucket_batches(np.ones(n_rows, dtype=int), batch_size, seed=0, epoch=e, bucket=False)
        for k in range(0, len(batches), world):
            rnd = batches[k:k + world]
            loss = sum((((X[torch.as_tensor(r)] @ w.T).squeeze(-1) + b - Y[torch.as_tensor(r)]) ** 2).mean()
                       for r in rnd) / len(rnd)
            gw, gb = torch.autograd.grad(loss, [w, b])
            with torch.no_grad():
                w -= 0.1 * gw
                b -= 0.1 * gb
    return w.reshape(-1).tolist(), b.tolist()


@pytest.mark.parametrize("n_rows,batch_size", [(20, 8), (200, 32)])
def test_every_row_trained_once_per_epoch_under_two_processes(tmp_path, n_rows, batch_size):
    """20 rows in batches of 8 (3 batches) and 200 in batches of 32 (7 batches) under 2 processes: the batch
    count is odd, so the last round has one batch for two processes. Every row is trained exactly once per
    epoch (the rows each process collated), both processes take the same number of steps, the loop counts
    the rows, and the weights are those of SGD on the mean gradient of each round's real batches."""
    import math

    script = tmp_path / "toy.py"
    script.write_text(TOY)
    epochs = 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(n_rows), str(batch_size), str(epochs), str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"run/rank{k}.json").read_text()) for k in range(2)]
    n_batches = math.ceil(n_rows / batch_size)
    for e in range(epochs):
        rows = sorted(x for rk in ranks for ep, batch in rk["seen"] for x in batch if ep == e)
        assert rows == list(range(n_rows)), f"epoch {e}: rows trained {len(rows)}, distinct {len(set(rows))}"
    assert [rk["steps"] for rk in ranks] == [epochs * math.ceil(n_batches / 2)] * 2
    assert all(rk["rows_per_epoch"] == [n_rows] * epochs for rk in ranks)
    # rank 1 collated one batch fewer per epoch than rank 0 (it padded the last round)
    assert len(ranks[0]["seen"]) - len(ranks[1]["seen"]) == epochs
    want_w, want_b = _toy_reference(n_rows, batch_size, epochs, world=2)
    for rk in ranks:
        torch.testing.assert_close(torch.tensor(rk["weight"], dtype=torch.float64), torch.tensor(want_w, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(torch.tensor(rk["bias"], dtype=torch.float64), torch.tensor(want_b, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)


def test_shard_pads_the_last_round_and_refuses_too_few_batches(monkeypatch):
    """shard() in a simulated 3-process world: the batches of all ranks together are the epoch's, each once;
    every rank has ceil(n / 3) steps; round_weight makes the last round's average over its real batches; and
    an epoch with fewer batches than processes is refused with the way out."""
    import numpy as np

    from naskd.errors import NaskdError
    from naskd.utils import dist as ndist

    batches = [np.arange(i * 4, i * 4 + 4) for i in range(7)]          # 7 batches, 28 rows
    monkeypatch.setattr(ndist, "world_size", lambda: 3)
    shares, weights = [], []
    for r in range(3):
        monkeypatch.setattr(ndist, "rank", lambda r=r: r)
        shares.append(ndist.shard(batches))
        weights.append([ndist.round_weight(len(batches), s) for s in range(len(shares[-1]))])
    assert [len(s) for s in shares] == [3, 3, 3]
    real = sorted(int(x) for s in shares for b in s if b is not None for x in b)
    assert real == list(range(28))
    assert [s[-1] is None for s in shares] == [False, True, True]
    # full rounds weigh 1; the last round has one real batch: its rank scales by 3, the padded ones by 0
    assert weights == [[1, 1, 3], [1, 1, 0], [1, 1, 0]]
    with pytest.raises(NaskdError, match=r"an epoch of 8 training rows makes 2 batches, fewer than the 3 "
                                         r"data-parallel processes; use --batch-size 2 or smaller"):
        ndist.shard(batches[:2])
    with pytest.raises(NaskdError, match=r"at most 2 processes"):
        ndist.shard([np.arange(2)])


def test_retrain_counts_rows_and_refuses_too_few_batches(tiny_teacher, tmp_path):
    """The issue's examples through `naskd retrain` under torchrun: 20 rows in one batch of 32 (which ran 0
    steps and saved the untrained student as best) are refused before training, with nothing saved as a
    student; 200 rows in batches of 32 (which skipped a batch every epoch) train every row each epoch, and
    metrics.json counts the rows trained and the steps taken."""
    teacher, _ = tiny_teacher
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GENOTYPE))
    env = {"NASKD_CACHE_DIR": str(tmp_path / "c")}
    common = ["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(g), "--data-dir", str(DATA),
              "--max-eval-examples", "32", "--checkpoint-every", "0"]
    r = torchrun(*common, "--max-train-examples", "20", "--out", str(tmp_path / "few"), env_extra=env)
    assert r.returncode != 0
    msg = ("naskd retrain: error: an epoch of 20 training rows makes 1 batch, fewer than the 2 data-parallel "
           "processes; use --batch-size 10 or smaller (so that every process gets a batch), or fewer processes")
    # each process says it in one line; torchrun's own launcher then reports the failed processes
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("naskd retrain:")] == [msg, msg]
    assert "naskd/" not in r.stderr          # no frame of naskd's code: no traceback of ours
    assert not (tmp_path / "few/student").exists() and not (tmp_path / "few/metrics.json").exists()
    # 200 rows in batches of 32: 7 batches, the last round padded (20 rows in 3 batches: the toy test above)
    out = tmp_path / "r200"
    r = torchrun(*common, "--max-train-examples", "200", "--epochs", "2", "--out", str(out), env_extra=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["rows_trained_per_epoch"] == [200, 200] and m["train_examples"] == 200
    assert m["steps"] == 2 * 4 and m["processes"] == 2
    assert (out / "student/model.safetensors").is_file()
