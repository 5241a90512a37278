"""Selection splits carved from a training split without leaking into it.

SST-2's training split holds the Stanford Sentiment Treebank's phrases: every sub-phrase of each of its 6,920
training sentences is a labelled row of its own, while dev holds whole sentences only. Carving a selection split
by drawing random rows (``rows``) therefore selects on phrases whose longer phrases, with their labels, stay in
training: measured on SST-2, 89% of 5,000 randomly carved rows lie inside a training row, against 0.2% of dev's
sentences. Such a split overstates accuracy (SST-2 teacher recipes: 3.9 points above dev on average, against
0.3 for whole rows; both ranked the recipes about as dev did) and may favour models that memorise phrases. ``sentences`` draws the selection
among the rows no other row contains (SST-2: 6,885 rows, 19.4 words on average, dev 19.5) and drops from training
every row inside a drawn one (its sub-phrases, and its duplicates), as a grouped split would (scikit-learn's
``GroupShuffleSplit``, with each sentence's phrases as one group). On data without that structure (a training row
inside another is rare), both carves select on about the same rows.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError

CARVES = ("rows", "sentences")
LEAK_WARNING = 0.1        # a random carve warns when more of its rows than this lie inside training rows


@dataclass(frozen=True)
class Carve:
    """Row indices (sorted, into the texts given) of a carved selection split.

    ``selection``: the rows to select on. ``dropped``: rows kept out of training because they lie inside a
    selection row (word-bounded; exact duplicates included), the selection rows themselves excluded.
    ``train``: every other row."""

    selection: np.ndarray
    dropped: np.ndarray
    train: np.ndarray

    def describe(self) -> str:
        what = f"{len(self.selection):,} rows to select on"
        if len(self.dropped):
            what += f", {len(self.dropped):,} training rows inside them kept out of training"
        return what


def row_texts(columns: dict) -> list[str]:
    """One whitespace-normalised string per row of a split read by :func:`naskd.data.readers.read_columns`
    (sentence pairs joined by `` ||| ``, token lists joined by spaces)."""
    if "tokens" in columns:
        return [" ".join(t) for t in columns["tokens"]]
    first = columns["text"]
    if "text_pair" in columns:
        return [" ".join(a.split()) + " ||| " + " ".join(b.split()) for a, b in zip(first, columns["text_pair"])]
    return [" ".join(t.split()) for t in first]


class _Holders:
    """Which rows hold a given row as a word-bounded substring (an inverted word index over ``texts``)."""

    def __init__(self, texts: Sequence[str]):
        self.texts = texts
        self.padded = [f" {t} " for t in texts]
        self.by_word: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(texts):
            for w in set(t.split()):
                self.by_word[w].append(i)

    def inside_another(self, i: int, skip: frozenset = frozenset()) -> bool:
        """Whether a longer row (one not in ``skip``) holds row ``i``."""
        words = self.texts[i].split()
        if not words:
            return False
        rarest = min(words, key=lambda w: len(self.by_word[w]))     # every row holding row i holds this word
        size, inner = len(self.texts[i]), self.padded[i]
        return any(len(self.texts[j]) > size and j not in skip and inner in self.padded[j]
                   for j in self.by_word[rarest])


def inside_fraction(texts: Sequence[str], selection: np.ndarray) -> float:
    """The fraction of the ``selection`` rows that a longer row outside the selection holds (word-bounded): how
    much of a randomly carved selection split the training rows contain (SST-2: 0.89; its dev: 0.002)."""
    if len(selection) == 0:
        return 0.0
    holders, skip = _Holders(texts), frozenset(int(i) for i in selection)
    return sum(holders.inside_another(int(i), skip) for i in selection) / len(selection)


def carve_selection(texts: Sequence[str], n: int, rng: np.random.Generator, how: str = "sentences",
                    among: np.ndarray | None = None) -> Carve:
    """Carve ``n`` rows to select on from ``texts`` (whitespace-normalised, see :func:`row_texts`).

    ``how="rows"``: ``n`` rows drawn at random (``rng.permutation``), nothing dropped. ``how="sentences"``: ``n``
    rows drawn at random among those no longer row contains as a word-bounded substring; every row inside a
    drawn row (its n-grams that are rows, duplicates included) is dropped from training. ``among``: the row
    indices that may be drawn (default all; rows outside it are never drawn but may be dropped).

    Raises :class:`ConfigError` when fewer than ``n`` rows can be drawn, or when the training rows left would be
    fewer than the selection rows."""
    if how not in CARVES:
        raise ConfigError(f"unknown selection carve {how!r}; known: {', '.join(CARVES)}")
    total = len(texts)
    pool = np.arange(total) if among is None else np.asarray(among, dtype=np.int64)
    if n > len(pool) // 2:
        raise ConfigError(f"--selection-examples {n} would leave fewer rows to train on than to select on "
                          f"({len(pool)} training rows); lower it to at most {len(pool) // 2}")
    order = rng.permutation(pool)
    if how == "rows":
        selection = np.sort(order[:n])
        return Carve(selection, np.zeros(0, dtype=np.int64), np.setdiff1d(np.arange(total), selection))
    holders = _Holders(texts)
    chosen = []
    for i in order:
        if not holders.inside_another(int(i)):
            chosen.append(int(i))
            if len(chosen) == n:
                break
    if len(chosen) < n:
        more = ("" if among is None else
                f" among the {len(pool):,} of the training subsample (raise --max-train-examples)")
        raise ConfigError(f"--selection-examples {n}: only {len(chosen)} training rows lie inside no other row "
                          f"(whole sentences) to select on{more}; lower it, or carve random rows with "
                          f"--selection-from rows")
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        by_text[t].append(i)
    selection = np.sort(np.asarray(chosen, dtype=np.int64))
    inside = set()
    for i in selection:
        words = texts[i].split()
        for a in range(len(words)):
            for b in range(a + 1, len(words) + 1):
                inside.update(by_text.get(" ".join(words[a:b]), ()))
    inside.difference_update(selection.tolist())
    dropped = np.array(sorted(inside), dtype=np.int64)
    train = np.setdiff1d(np.arange(total), np.concatenate([selection, dropped]))
    if len(train) < n:
        raise ConfigError(f"--selection-examples {n}: the whole rows drawn and the {len(dropped):,} rows inside them "
                          f"leave {len(train):,} rows to train on, fewer than the selection; lower it")
    return Carve(selection, dropped, train)


def search_selection(columns: dict, keep: np.ndarray, n: int, seed: int, how: str) -> Carve:
    """The selection split of a one-shot, random or Hyperband search (``naskd search --selection-from``):
    :func:`carve_selection` over the whole training split's rows (``columns`` as read by
    :func:`naskd.data.readers.read_columns`), drawing among ``keep`` (the rows of the training subsample, in
    its order), seeded by the search's ``--data-seed``. Indices are rows of the whole split."""
    return carve_selection(row_texts(columns), n, np.random.default_rng([seed, 5]), how, among=keep)
