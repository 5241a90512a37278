"""bf16 autocast of training steps (issue 24 point 3). On CUDA every training loop (`fit`: retrain, teacher
fine-tuning, every search strategy's supernet or candidate step, darts' architecture step) runs its forward
and loss under ``torch.autocast(bfloat16)`` (:func:`naskd.utils.runtime.mixed_precision`). No test may need a
GPU, so these turn bf16 on for the CPU (``runtime.BF16_DEVICES``; torch's CPU autocast supports bfloat16) and
check that each loop trains under it: a different trajectory from float32, finite losses, float32 weights
saved, and the searches' outputs written."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from naskd.cli import main
from naskd.utils import runtime

from .conftest import DATA, TINY_BERT
from .search.test_strategies import CELL, MACRO
from .students.test_retrain import GENOTYPE

@pytest.fixture()
def bf16_on_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "BF16_DEVICES", ("cuda", "cpu"))


def test_mixed_precision_is_bf16_on_cuda_only(monkeypatch):
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with runtime.mixed_precision("cpu"):
        assert (a @ b).dtype == torch.float32                 # the CPU trains in float32 by default
    monkeypatch.setattr(runtime, "BF16_DEVICES", ("cuda", "cpu"))
    with runtime.mixed_precision(torch.device("cpu")):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32                     # and off again outside


def retrain(teacher, genotype, out):
    assert main(["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(genotype),
                 "--data-dir", str(DATA), "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs",
                 "2", "--batch-size", "8", "--kd", "logit_mse=1,pkd=1", "--out", str(out),
                 "--checkpoint-every", "0"]) == 0
    return load_file(str(out / "student/model.safetensors")), json.loads((out / "metrics.json").read_text())


def test_retrain_trains_under_bf16_and_saves_float32(tiny_teacher, tmp_path, monkeypatch):
    teacher, _ = tiny_teacher
    g = tmp_path / "genotype.json"
    g.write_text(json.dumps(GENOTYPE))
    w32, m32 = retrain(teacher, g, tmp_path / "fp32")
    monkeypatch.setattr(runtime, "BF16_DEVICES", ("cuda", "cpu"))
    w16, m16 = retrain(teacher, g, tmp_path / "bf16")
    assert m16["status"] == "finished" and 0 <= m16["dev"]["accuracy"] <= 1
    assert all(v.dtype == torch.float32 for v in w16.values())           # master weights stay float32
    assert all(torch.isfinite(v).all() for v in w16.values())
    # same seed, same rows: only the step's precision differs, so the weights must too
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)
    # ...but not by much after 16 small steps from the same start
    drift = max(float((w32[k] - w16[k]).abs().max()) for k in w32)
    assert drift < 0.1, drift


def test_teacher_finetune_under_bf16(tmp_path, bf16_on_cpu):
    out = tmp_path / "t"
    assert main(["teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(DATA), "--epochs",
                 "1", "--max-train-examples", "64", "--max-eval-examples", "32", "--batch-size", "16", "--out",
                 str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished"
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all()
               for v in load_file(str(out / "model.safetensors")).values())


@pytest.mark.usefixtures("shared_latency_table")
@pytest.mark.parametrize("strategy,space,extra", [("spos", MACRO, ()), ("darts", CELL, ("--order", "2")),
                                                  ("gdas", MACRO, ())])
def test_searches_train_under_bf16(tiny_teacher, tmp_path, bf16_on_cpu, strategy, space, extra):
    teacher, _ = tiny_teacher
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(space))
    out = tmp_path / strategy
    assert main(["search", "--strategy", strategy, "--task", "sst2", "--teacher", str(teacher), "--data-dir",
                 str(DATA), "--space", str(f), "--layers", "2", "--max-train-examples", "160",
                 "--selection-examples", "48", "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "1",
                 "--trials", "6", "--population", "4", "--latency-threads", "1", "--out", str(out),
                 "--checkpoint-every", "1000", *extra]) == 0
    assert (out / "genotype.json").is_file()          # every strategy's loop ended with a pick
    if strategy != "darts":                             # the one-shot strategies' candidates, scored
        scores = [c["score"] for c in json.loads((out / "pareto.json").read_text())["candidates"]]
        assert scores and all(0 <= s <= 1 for s in scores)


def test_darts_order_2_hessian_term_survives_bf16(tiny_teacher, tmp_path, monkeypatch):
    """The second-order step moves the weights in place between its forwards (w', then w +- eps v); autocast
    caches bf16 copies of the weights until its outermost context ends, so each forward must open its own
    (an outer context around the architecture step once lost ~40% of the Hessian-vector product's norm)."""
    from naskd.search.architect import Architect

    teacher, _ = tiny_teacher
    f = tmp_path / "cell.yaml"
    f.write_text(yaml.safe_dump(CELL))
    orig = Architect.hessian_vector_product
    norms: dict = {}

    def run(tag):
        norms[tag] = []

        def rec(self, *a, **k):
            h = orig(self, *a, **k)
            norms[tag].append(float(torch.sqrt(sum((x.double() ** 2).sum() for x in h))))
            return h

        monkeypatch.setattr(Architect, "hessian_vector_product", rec)
        assert main(["search", "--strategy", "darts", "--order", "2", "--task", "sst2", "--teacher", str(teacher),
                     "--data-dir", str(DATA), "--space", str(f), "--layers", "2", "--max-train-examples", "64",
                     "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "1", "--kd", "soft_ce=1",
                     "--out", str(tmp_path / tag), "--checkpoint-every", "1000"]) == 0

    run("fp32")
    monkeypatch.setattr(runtime, "BF16_DEVICES", ("cuda", "cpu"))
    run("bf16")
    a, b = norms["fp32"][0], norms["bf16"][0]             # the first step: the same weights and batches
    assert a > 0 and abs(b - a) / a < 0.1, (a, b)
