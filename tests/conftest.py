"""Shared fixtures: real data and the tiny real BERT from ../shared, a tiny random BERT built here, temporary
run and cache folders.

Tests that need ../shared (their function, a fixture they use or a helper of the same module reads ``DATA``,
``TINY_BERT`` or ``SHARED``) are marked ``slow`` when collected; without ../shared they are skipped, and the rest (unit tests, among them
those on ``tiny_random_bert``) still run: ``pytest -m "not slow"`` runs the stand-alone part alone."""
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


_SHARED_NAMES = {"DATA", "TINY_BERT", "SHARED"}


def _code_names(code) -> set:
    """Global names a code object and the functions nested in it read."""
    names = set(code.co_names)
    for c in code.co_consts:
        if hasattr(c, "co_names"):
            names |= _code_names(c)
    return names


def _reads_shared(fn, seen: set) -> bool:
    """Whether ``fn``, or a function of its own module it calls (transitively), reads DATA, TINY_BERT or SHARED
    or a module constant that names a path under SHARED."""
    fn = getattr(fn, "__wrapped__", fn)
    code = getattr(fn, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _code_names(code)
    if names & _SHARED_NAMES:
        return True
    glob = getattr(fn, "__globals__", {})
    if any(isinstance(glob.get(n), (str, Path, list, tuple, dict)) and str(SHARED) in repr(glob[n]) for n in names):
        return True                   # a module constant built from them (an argv naming the data folder)
    return any(_reads_shared(glob[n], seen) for n in names
               if callable(glob.get(n)) and getattr(glob[n], "__module__", None) == fn.__module__)


def _needs_shared(item) -> bool:
    """A test needs ../shared when its function, a fixture it uses (transitively) or a helper of their modules
    reads DATA, TINY_BERT or SHARED, or when a parameter of it is a path under SHARED."""
    seen: set = set()
    if _reads_shared(getattr(item, "function", None), seen):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        if any(_reads_shared(d.func, seen) for d in defs):
            return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(str(v).startswith(str(SHARED)) for v in params.values())


def pytest_collection_modifyitems(config, items):
    have = DATA.is_dir() and TINY_BERT.is_dir()
    skip = pytest.mark.skip(reason=f"needs ../shared beside the repository (looked in {SHARED}; set NASKD_SHARED)")
    for item in items:
        if _needs_shared(item):
            item.add_marker(pytest.mark.slow)
            if not have:
                item.add_marker(skip)


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'-",
              *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
              "the", "a", "an", "and", "of", "to", "is", "it", "this", "that", "film", "movie", "story", "good",
              "bad", "great", "not", "never", "very", "funny", "dull", "love", "hate", "plot", "actors", "with"]


@pytest.fixture(scope="session")
def tiny_random_bert(tmp_path_factory):
    """A 2-layer, 32-wide BERT with random (seeded) weights and a WordPiece tokenizer of a 100-odd-token
    vocabulary, saved as a Hugging Face model directory (config.json, model.safetensors, tokenizer files):
    for tests of code that needs a tokenizer or a BERT's shapes, not a trained model (as transformers'
    model testers build theirs)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-random-bert")
    ids = {w: i for i, w in enumerate(TINY_VOCAB)}
    wp = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    wp.decoder = decoders.WordPiece()
    tok = BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", do_lower_case=True)
    tok.save_pretrained(str(out))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(out))
    return out


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
    a cached table is neither re-timed nor rescaled (drift itself is tested in tests/search/test_lut.py), and
    the picks are reported at one thread only (a test that wants both sets ``lut.machine_threads`` back)."""
    from naskd.search import lut

    monkeypatch.setattr(lut, "default_lut_path", lambda cache_dir=None: _latency_dir / f"{lut.machine_id()}.json")
    monkeypatch.setattr(lut, "DRIFT_TOLERANCE", float("inf"))
    monkeypatch.setattr(lut.LatencyLUT, "drift", lambda self, *a, **k: {})
    monkeypatch.setattr(lut, "machine_threads", lambda cores=None: (1,))
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
