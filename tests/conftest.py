"""Shared fixtures: real data and the tiny real BERT from ../shared, temporary run and cache folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NASKD_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
TINY_BERT = SHARED / "models" / "bert-tiny-splade"


def pytest_configure(config):
    # tiny models run faster on one thread, and a test run never fights a background job for cores
    import torch

    torch.set_num_threads(1)
    if not DATA.is_dir() or not TINY_BERT.is_dir():
        raise pytest.UsageError(f"tests need ../shared beside the repository (looked in {SHARED}); "
                                "set NASKD_SHARED to its path")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # No test may read a cache or data root filled by hand, nor reach the Hub.
    monkeypatch.setenv("NASKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NASKD_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def _latency_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("latency")


@pytest.fixture()
def shared_latency_table(_latency_dir, monkeypatch):
    """One latency table for every search of the session that asks for it, as a user's cache is: measured by the
    first search, extended by later ones. Timing noise between two searches is not a drifted machine here, so
    a cached table is never rescaled (drift itself is tested in tests/search/test_lut.py)."""
    from naskd.search import lut

    monkeypatch.setattr(lut, "default_lut_path", lambda cache_dir=None: _latency_dir / f"{lut.machine_id()}.json")
    monkeypatch.setattr(lut, "DRIFT_TOLERANCE", float("inf"))
    return _latency_dir


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A real fine-tuned teacher run: bert-tiny on 256 SST-2 examples, one epoch."""
    from naskd.teachers.finetune import finetune_teacher, resolve_teacher_config

    out = tmp_path_factory.mktemp("teacher") / "sst2-teacher"
    cfg = resolve_teacher_config({"task": "sst2", "teacher": str(TINY_BERT), "data_dir": str(DATA),
                                  "out": str(out), "epochs": 1, "max_train_examples": 256,
                                  "max_eval_examples": 128, "batch_size": 32, "lr": 1e-4})
    metrics = finetune_teacher(cfg)
    return out, metrics
