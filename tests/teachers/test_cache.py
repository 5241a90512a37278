import numpy as np
import pytest
import torch

from naskd.data.encode import collate, encode
from naskd.data.readers import read_columns
from naskd.data.tasks import get_task
from naskd.errors import NaskdError
from naskd.teachers import TeacherModel, load_teacher
from naskd.teachers.cache import HiddenRequest, TeacherCache

from ..conftest import DATA


@pytest.fixture()
def counted(monkeypatch):
    calls = {"n": 0}
    orig = TeacherModel.forward

    def forward(self, *a, **k):
        calls["n"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(TeacherModel, "forward", forward)
    return calls


def _dev(tok, n=40, max_length=128):
    spec = get_task("sst2")
    cols = {k: v[:n] for k, v in read_columns(spec, DATA, "dev").items()}
    return encode(spec, cols, tok, max_length)


def test_second_request_runs_no_teacher_forward(tiny_teacher, tmp_path, counted):
    out, _ = tiny_teacher
    _, tok, _ = load_teacher(out)
    data = _dev(tok)
    cache = TeacherCache(tmp_path / "c")
    req = [HiddenRequest(1, "cls"), HiddenRequest(2, "tokens")]
    first = cache.get(out, data, req, batch_size=16)
    assert counted["n"] == 3  # ceil(40 / 16) batches
    again = TeacherCache(tmp_path / "c").get(out, data, req, batch_size=16)
    assert counted["n"] == 3
    assert isinstance(again.logits, np.memmap)
    np.testing.assert_array_equal(first.logits, again.logits)


def test_cached_values_match_a_direct_forward(tiny_teacher, tmp_path):
    out, _ = tiny_teacher
    model, tok, _ = load_teacher(out)
    data = _dev(tok, 12)
    cached = TeacherCache(tmp_path / "c").get(out, data, [HiddenRequest(1, "cls"), HiddenRequest(2, "tokens")],
                                              batch_size=5)
    rows = [3, 0, 7]
    batch = collate(data, rows)
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True)
    torch.testing.assert_close(cached.logits_for(rows), ref["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.hidden_for(HiddenRequest(1, "cls"), rows), ref["hidden_states"][1][:, 0],
                               atol=2e-2, rtol=2e-3)  # float16 storage
    tokens = cached.hidden_for(HiddenRequest(2, "tokens"), rows)
    mask = batch["attention_mask"].unsqueeze(-1)
    torch.testing.assert_close(tokens, ref["hidden_states"][2] * mask, atol=2e-2, rtol=2e-3)


def test_new_items_and_changed_inputs_recompute(tiny_teacher, tmp_path, counted):
    out, _ = tiny_teacher
    _, tok, _ = load_teacher(out)
    data = _dev(tok, 20)
    cache = TeacherCache(tmp_path / "c")
    cache.get(out, data, [], batch_size=32)
    assert counted["n"] == 1
    key = cache.key(out, data)
    # asking for a hidden layer the entry lacks computes it (once) under the same key
    cache.get(out, data, [HiddenRequest(1, "cls")], batch_size=32)
    cache.get(out, data, [HiddenRequest(1, "cls")], batch_size=32)
    assert counted["n"] == 2
    # different tokenisation (max_length) -> different key, recomputed
    short = _dev(tok, 20, max_length=8)
    assert cache.key(out, short) != key
    cache.get(out, short, [], batch_size=32)
    assert counted["n"] == 3
    # different data
    assert cache.key(out, _dev(tok, 19)) != key


def test_changed_teacher_weights_change_the_key(tiny_teacher, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    out, _ = tiny_teacher
    copy = tmp_path / "teacher-copy"
    shutil.copytree(out, copy)
    _, tok, _ = load_teacher(out)
    data = _dev(tok, 10)
    cache = TeacherCache(tmp_path / "c")
    assert cache.key(copy, data) == cache.key(out, data)
    state = load_file(str(copy / "model.safetensors"))
    state["head.bias"] = state["head.bias"] + 1.0
    save_file(state, str(copy / "model.safetensors"))
    assert cache.key(copy, data) != cache.key(out, data)
    shifted = cache.get(copy, data, []).logits
    base = cache.get(out, data, []).logits
    np.testing.assert_allclose(shifted, np.asarray(base) + 1.0, atol=1e-4)


def test_bad_requests(tiny_teacher, tmp_path):
    out, _ = tiny_teacher
    _, tok, _ = load_teacher(out)
    data = _dev(tok, 4)
    with pytest.raises(NaskdError, match="layers 0..2"):
        TeacherCache(tmp_path).get(out, data, [HiddenRequest(5, "cls")])
    with pytest.raises(NaskdError, match="positions must be one of"):
        TeacherCache(tmp_path).get(out, data, [HiddenRequest(1, "middle")])


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NASKD_CACHE_DIR", str(tmp_path / "envcache"))
    assert TeacherCache().root == tmp_path / "envcache"
    assert TeacherCache(tmp_path / "x").root == tmp_path / "x"
