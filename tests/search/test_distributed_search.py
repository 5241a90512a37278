"""`naskd search` under torchrun (two CPU processes, gloo): every strategy ends on every rank with the same
weights (metrics.json's replicas_agree) and matches a one-process run of the same global batch within float
tolerance (alphas, selection scores, the genotype, hyperband's pruning); a stopped run resumes under torchrun,
and not under another number of processes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from ..conftest import DATA

MACRO = {"kind": "macro", "name": "tinymacro", "embed": [8, 16], "depth": [1, 2],
         "ops": ["lstm", "conv3", "attn2"], "widths": [8, 16], "pooling": ["ends", "max", "mean"],
         "classifier": [8, 16]}
CELL = {"name": "tinycell", "ops": ["conv3", "identity", "attn4", "lstm", "none"],
        "aggregators": ["max_pool", "avg_pool"], "nodes": 2, "width": 16}


def search(n: int, teacher, space, out, strategy, *extra):
    """``naskd search`` in ``n`` processes (torchrun when n > 1); dropout off, so that the ranks' slices of a
    batch see what one process sees of the whole batch."""
    args = ["search", "--strategy", strategy, "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA),
            "--space", str(space), "--layers", "2", "--max-train-examples", "160", "--selection-examples", "48",
            "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "2", "--trials", "10", "--population",
            "4", "--candidates", "3", "--latency-threads", "1", "--checkpoint-every", "1000", "--dropout", "0",
            "--kd", "logit_mse", "--device", "cpu", "--out", str(out), *extra]
    launcher = ([sys.executable, "-m", "naskd"] if n == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", "naskd"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def spaces(tmp_path):
    out = {}
    for name, data in (("cell", CELL), ("macro", MACRO)):
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(data))
    return out


def scores(run) -> dict:
    return {c["text"]: c["score"] for c in json.loads((run / "pareto.json").read_text())["candidates"]}


@pytest.mark.parametrize("strategy,kind,extra", [
    ("spos", "macro", ()), ("random", "macro", ()), ("gdas", "macro", ()), ("darts", "cell", ("--order", "2")),
    ("hyperband", "macro", ("--rung-rows", "32", "--budget-rows", "1200"))])
def test_two_processes_match_one(tiny_teacher, spaces, tmp_path, strategy, kind, extra):
    teacher, _ = tiny_teacher
    one, two = tmp_path / "one", tmp_path / "two"
    r = search(1, teacher, spaces[kind], one, strategy, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    r = search(2, teacher, spaces[kind], two, strategy, *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("[search] finished") == 1                  # rank 0 alone reports
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1["processes"] == 1 and "replicas_agree" not in m1
    assert m2["processes"] == 2 and m2["replicas_agree"] is True     # every rank ended with the same weights
    if strategy == "darts":               # the architecture gradients were reduced by hand, order 2 included
        h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
        for e1, e2 in zip(h1, h2, strict=True):
            np.testing.assert_allclose(e1["alphas"]["ops"], e2["alphas"]["ops"], rtol=0, atol=1e-6)
            assert e1["genotype"] == e2["genotype"]
        assert m1["steps"] == m2["steps"]
        return
    # the same architectures score the same with the weights each run trained (rank 0's scores)
    s1, s2 = scores(one), scores(two)
    common = set(s1) & set(s2)
    assert common and all(abs(s1[k] - s2[k]) < 1e-9 for k in common)
    if strategy == "random":              # no constraint: the same draws, trained alike
        assert set(s1) == set(s2)
    elif strategy == "hyperband":         # the same proposals, rungs and pruning decisions
        assert set(s1) == set(s2)
        r1, r2 = ([json.loads(x) for x in (d / "candidates.jsonl").read_text().splitlines()] for d in (one, two))
        assert [(r["trial"], r["state"], r.get("rows")) for r in r1] == [(r["trial"], r["state"], r.get("rows"))
                                                                          for r in r2]
        assert m1["pruned"] == m2["pruned"] and m1["rows_trained"] == m2["rows_trained"]
    else:
        assert m1["supernet_steps"] == m2["supernet_steps"]
        w1, w2 = (torch.load(d / "checkpoint.pt", weights_only=True)["modules"]["model"] for d in (one, two))
        for k in w1:
            torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=1e-4)
    if strategy == "gdas":
        p1, p2 = (json.loads((d / "alphas.json").read_text())[-1]["probabilities"] for d in (one, two))
        for dim in p1:
            for o in p1[dim]:
                assert abs(p1[dim][o] - p2[dim][o]) < 1e-6


def test_a_stopped_run_resumes_under_as_many_processes_only(tiny_teacher, spaces, tmp_path):
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    assert search(2, teacher, spaces["macro"], full, "spos").returncode == 0
    r = search(2, teacher, spaces["macro"], part, "spos", "--stop-after-steps", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((part / "metrics.json").read_text())["status"] == "stopped"
    r = search(1, teacher, spaces["macro"], part, "spos", "--resume")
    assert r.returncode == 2
    assert "was trained by 2 processes; resume it with as many (torchrun --nproc_per_node 2" in r.stderr
    r = search(2, teacher, spaces["macro"], part, "spos", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert scores(part) == scores(full)
    w1, w2 = (torch.load(d / "checkpoint.pt", weights_only=True)["modules"]["model"] for d in (full, part))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=0)
