import numpy as np
import pytest
from transformers import AutoTokenizer

from naskd.data.encode import IGNORE, bucket_batches, collate, encode, epoch_rows
from naskd.errors import NaskdError
from naskd.data.readers import read_columns
from naskd.data.tasks import get_task

from ..conftest import DATA, TINY_BERT


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(TINY_BERT))


def test_pair_layout_and_segments(tok):
    spec = get_task("rte")
    cols = {"text": ["a cat sat"], "text_pair": ["on mats"], "label": [1], "idx": [0]}
    enc = encode(spec, cols, tok, 64)
    ids = enc.input_ids[0].tolist()
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "[CLS]" and toks.count("[SEP]") == 2 and toks[-1] == "[SEP]"
    sep = toks.index("[SEP]")
    assert enc.token_type_ids[0].tolist() == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert toks[1:sep] == tok.tokenize("a cat sat")


def test_tagging_labels_on_first_subtokens(tok):
    spec = get_task("conll2003")
    words = ["Unaffordable", "EU", "x"]
    tags = [spec.label_index()[t] for t in ("O", "B-ORG", "O")]
    enc = encode(spec, {"tokens": [words], "tags": [tags], "idx": [0]}, tok, 64)
    starts = enc.word_starts[0].tolist()
    pieces = tok.convert_ids_to_tokens(enc.input_ids[0].tolist())
    assert len(starts) == 3 and starts[0] == 1
    assert [pieces[s] for s in starts] == [tok.tokenize(w)[0] for w in words]
    batch = collate(enc, [0])
    assert batch["labels"][0].tolist() == tags and batch["word_mask"].all()


def test_tagging_truncation_warns(tok):
    spec = get_task("conll2003")
    words = ["word"] * 40
    with pytest.warns(UserWarning, match="1 of 1 conll2003 sentences exceed max_length=16"):
        enc = encode(spec, {"tokens": [words], "tags": [[0] * 40], "idx": [0]}, tok, 16)
    assert len(enc.word_starts[0]) == len(enc.labels[0]) == 14


def test_bucket_batches_cover_each_example_once_and_replay():
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    b1 = bucket_batches(lengths, 32, seed=5, epoch=2)
    b2 = bucket_batches(lengths, 32, seed=5, epoch=2)
    assert all((x == y).all() for x, y in zip(b1, b2))
    allidx = np.concatenate(b1)
    assert sorted(allidx.tolist()) == list(range(1003))
    b3 = bucket_batches(lengths, 32, seed=5, epoch=3)
    assert not all((x == y).all() for x, y in zip(b1, b3))


def test_epoch_rows_stream_of_passes():
    n, k = 10, 4
    epochs = [epoch_rows(n, k, seed=3, epoch=e) for e in range(5)]        # 20 rows = two full passes
    assert all(len(e) == k for e in epochs)
    stream = np.concatenate(epochs)
    # each pass covers every row exactly once, and the two passes are shuffled differently
    assert sorted(stream[:n].tolist()) == list(range(n)) and sorted(stream[n:].tolist()) == list(range(n))
    assert not (stream[:n] == stream[n:]).all()
    # epoch 2 straddles the passes: rows 8..9 of the first, 0..1 of the second
    assert epochs[2].tolist() == stream[8:12].tolist()
    # replay: depends only on (seed, epoch); another seed differs
    assert (epoch_rows(n, k, seed=3, epoch=2) == epochs[2]).all()
    assert not all((epoch_rows(n, k, seed=4, epoch=e) == epochs[e]).all() for e in range(5))
    # more rows per epoch than there are: it wraps into the next pass
    big = epoch_rows(n, 25, seed=0, epoch=0)
    assert len(big) == 25 and np.bincount(big, minlength=n).max() == 3
    with pytest.raises(NaskdError, match="at least 1"):
        epoch_rows(n, 0, seed=0, epoch=0)


def test_bucketing_reduces_padding():
    lengths = np.random.default_rng(1).integers(3, 60, size=5000)
    pad = lambda bs: sum(len(b) * lengths[b].max() for b in bs)  # noqa: E731
    bucketed = pad(bucket_batches(lengths, 32, seed=0, epoch=0))
    plain = pad(bucket_batches(lengths, 32, seed=0, epoch=0, bucket=False))
    assert bucketed < 0.75 * plain
    ev = bucket_batches(lengths, 32, seed=0, epoch=0, shuffle=False)
    assert all(lengths[b].max() <= lengths[ev[k + 1]].min() for k, b in enumerate(ev[:-1]))


def test_collate_pads_to_batch_max_or_fixed(tok):
    spec = get_task("sst2")
    cols = read_columns(spec, DATA, "dev")
    enc = encode(spec, {k: v[:10] for k, v in cols.items()}, tok, 128)
    batch = collate(enc, [0, 1, 2])
    L = max(len(enc.input_ids[i]) for i in range(3))
    assert batch["input_ids"].shape == (3, L)
    assert batch["attention_mask"].sum(1).tolist() == [len(enc.input_ids[i]) for i in range(3)]
    assert collate(enc, [0, 1], pad_to=128)["input_ids"].shape == (2, 128)
    assert batch["labels"].tolist() == [int(x) for x in enc.labels[:3]]


def test_fingerprint_tracks_tokenisation(tok):
    spec = get_task("sst2")
    cols = {k: v[:20] for k, v in read_columns(spec, DATA, "dev").items()}
    a, b = encode(spec, cols, tok, 128), encode(spec, cols, tok, 128)
    assert a.fingerprint() == b.fingerprint()
    assert encode(spec, cols, tok, 10).fingerprint() != a.fingerprint()


def test_ignore_constant():
    assert IGNORE == -100
