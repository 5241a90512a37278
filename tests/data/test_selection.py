"""Selection splits carved without leaking training rows into them, checked against brute force."""
import itertools

import numpy as np
import pytest

from naskd.data.selection import carve_selection, inside_fraction, row_texts
from naskd.errors import ConfigError


def _treebank(seed: int = 0, sentences: int = 40) -> list[str]:
    """A small SST-like training split: whole sentences, some of their phrases as rows of their own, a few
    duplicates, and near misses that share characters but not words ("the film" inside "the filmmaker")."""
    rng = np.random.default_rng(seed)
    vocab = ["the", "film", "filmmaker", "is", "a", "not", "good", "bad", "movie", "very", "plot", "thin", "and",
             "funny", "dull", "it", "'s", "."]
    rows = []
    for _ in range(sentences):
        words = list(rng.choice(vocab, size=int(rng.integers(4, 10))))
        rows.append(" ".join(words))
        for _ in range(int(rng.integers(0, 6))):
            a = int(rng.integers(0, len(words)))
            b = int(rng.integers(a + 1, len(words) + 1))
            rows.append(" ".join(words[a:b]))
    rows += rows[:3]                          # exact duplicates
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def _holds(outer: str, inner: str) -> bool:
    """Brute force: ``inner``'s words appear consecutively in ``outer``'s."""
    o, i = outer.split(), inner.split()
    return any(o[k:k + len(i)] == i for k in range(len(o) - len(i) + 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sentence_carve_matches_brute_force(seed):
    texts = _treebank(seed)
    n = 8
    carve = carve_selection(texts, n, np.random.default_rng(seed), "sentences")
    sel, dropped, train = set(carve.selection.tolist()), set(carve.dropped.tolist()), set(carve.train.tolist())
    assert len(sel) == n and not (sel & dropped) and not (sel & train) and not (dropped & train)
    assert sel | dropped | train == set(range(len(texts)))
    whole = {i for i, t in enumerate(texts)
             if not any(len(u) > len(t) and _holds(u, t) for u in texts)}
    assert sel <= whole                                       # drawn among rows no longer row holds
    inside = {j for j in range(len(texts)) for i in sel if _holds(texts[i], texts[j])} - sel
    assert dropped == inside                                  # exactly the rows inside a drawn one go
    assert not any(_holds(texts[i], texts[j]) for i in sel for j in train)
    # seeded: the same draw again, another seed another draw
    again = carve_selection(texts, n, np.random.default_rng(seed), "sentences")
    assert np.array_equal(again.selection, carve.selection)


def test_words_not_characters_decide_what_holds_a_row():
    texts = ["the filmmaker is funny", "the film", "film", "a plot", "the plot is thin", "is thin", "thin"]
    # "the film" lies inside no row word by word (only "the filmmaker" by characters): a whole row
    assert inside_fraction(texts, np.array([1])) == 0.0 and inside_fraction(texts, np.array([5])) == 1.0
    for seed in range(6):
        carve = carve_selection(texts, 2, np.random.default_rng(seed), "sentences")
        assert set(carve.selection.tolist()) <= {0, 1, 3, 4}
        if 4 in carve.selection:
            assert {5, 6} <= set(carve.dropped.tolist())
        if 1 in carve.selection:
            assert 2 in carve.dropped and 0 not in carve.dropped


def test_inside_fraction_matches_brute_force():
    texts = _treebank(3)
    rows = np.sort(np.random.default_rng(3).permutation(len(texts))[:15])
    skip = set(rows.tolist())
    expected = np.mean([any(j not in skip and len(texts[j]) > len(texts[i]) and _holds(texts[j], texts[i])
                            for j in range(len(texts))) for i in rows])
    assert inside_fraction(texts, rows) == pytest.approx(expected)
    assert 0 < expected < 1
    assert inside_fraction(texts, np.zeros(0, dtype=np.int64)) == 0.0


def test_row_carve_is_the_seeded_permutation():
    texts = [f"row {i}" for i in range(20)]
    carve = carve_selection(texts, 5, np.random.default_rng(7), "rows")
    assert np.array_equal(carve.selection, np.sort(np.random.default_rng(7).permutation(20)[:5]))
    assert len(carve.dropped) == 0 and len(carve.train) == 15


def test_a_carve_that_cannot_be_made_is_refused():
    phrases = ["a b c d"] + [" ".join(w) for k in (1, 2, 3) for w in itertools.combinations("abcd", k)
                              if " ".join(w) in "a b c d"]
    with pytest.raises(ConfigError, match="only 1 training rows lie inside no other row"):
        carve_selection(phrases, 2, np.random.default_rng(0), "sentences")
    with pytest.raises(ConfigError, match="at most 5"):
        carve_selection([f"r{i}" for i in range(10)], 6, np.random.default_rng(0), "rows")
    with pytest.raises(ConfigError, match="unknown selection carve"):
        carve_selection(["a", "b"], 1, np.random.default_rng(0), "groups")


def test_row_texts_normalise_each_kind_of_split():
    assert row_texts({"text": [" a  b ", "c"]}) == ["a b", "c"]
    assert row_texts({"text": ["a  b"], "text_pair": [" c d"]}) == ["a b ||| c d"]
    assert row_texts({"tokens": [["EU", "rejects"]]}) == ["EU rejects"]
