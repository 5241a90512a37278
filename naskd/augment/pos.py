"""Part-of-speech information without the internet, behind one small interface.

:class:`CorpusTagger` is built from a POS-tagged corpus in CoNLL columns (``word POS ...``, blank lines
between sentences; CoNLL-2000's train file is one): each word gets its most frequent tag, and each tag
a replacement pool of words with their unigram frequencies. Words the corpus never saw get no tag and
are never replaced. :class:`SpacyTagger` uses spaCy's English model where it is installed. Lexicons
are built once and cached as JSON, keyed by the corpus file's content hash.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..data.readers import read_text
from ..errors import DataError, NaskdError
from ..utils.io import file_sha256, write_json


class PosTagger:
    """tag(words) -> one tag or None per word; sample(tag, rng) -> a word of that tag by frequency."""

    def tag(self, words: list[str]) -> list[str | None]:
        raise NotImplementedError

    def sample(self, tag: str, rng: np.random.Generator) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


class CorpusTagger(PosTagger):
    def __init__(self, word_tag: dict[str, str], pools: dict[str, tuple[list[str], list[int]]], *,
                 lowercase: bool, source: str = ""):
        self.word_tag, self.lowercase, self.source = word_tag, lowercase, source
        self.pools = {}
        for tag, (words, counts) in pools.items():
            c = np.asarray(counts, dtype=np.float64)
            self.pools[tag] = (list(words), np.cumsum(c) / c.sum())

    @classmethod
    def from_corpus(cls, path: str | os.PathLike, *, lowercase: bool = True, cache_dir=None) -> "CorpusTagger":
        """The lexicon of a CoNLL-column corpus (``word POS ...`` per line), cached under ``cache_dir`` by the
        file's content hash (a damaged cache entry is rebuilt, with a warning). Raises :class:`DataError` in
        one line for a missing, unreadable or non-UTF-8 file (``path:LINE`` and the byte found, or "binary"
        for NUL bytes), a line with fewer than two columns, or a corpus without tagged words."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"POS corpus {path} does not exist; pass --pos-corpus FILE (CoNLL columns "
                            "'word POS ...', e.g. CoNLL-2000's train.txt)")
        # checked to be UTF-8 text before anything else: a directory, an unreadable, binary or Latin-1 file
        # ends in one line naming it (with path:LINE where a line applies)
        text = read_text(path, what="POS corpus")
        cache = None
        if cache_dir is not None:
            key = f"{file_sha256(path)[:20]}-{'lower' if lowercase else 'cased'}"
            cache = Path(cache_dir) / "pos-lexicons" / f"{key}.json"
            if cache.is_file():
                try:
                    d = json.loads(cache.read_text(encoding="utf-8"))
                    return cls(d["word_tag"], {t: tuple(v) for t, v in d["pools"].items()}, lowercase=lowercase,
                               source=str(path))
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    # a cache entry cut short or damaged: the corpus is at hand, so build it again
                    warnings.warn(f"POS lexicon cache {cache} is unreadable; rebuilding it from {path}")
        counts: dict[str, Counter] = defaultdict(Counter)
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if not line or line.startswith("-DOCSTART-"):
                continue
            cols = line.split()
            if len(cols) < 2:
                raise DataError(f"{path}:{lineno}: expected 'word POS ...' columns, found {len(cols)} column")
            word = cols[0].lower() if lowercase else cols[0]
            counts[word][cols[1]] += 1
        if not counts:
            raise DataError(f"{path}: no tagged words found (expected CoNLL columns 'word POS ...')")
        word_tag = {w: c.most_common(1)[0][0] for w, c in counts.items()}
        freq: dict[str, Counter] = defaultdict(Counter)
        for w, c in counts.items():
            freq[word_tag[w]][w] += sum(c.values())
        pools = {t: (sorted(c), [c[w] for w in sorted(c)]) for t, c in freq.items()}
        if cache is not None:
            write_json(cache, {"source": str(path), "lowercase": lowercase, "word_tag": word_tag, "pools": pools})
        return cls(word_tag, pools, lowercase=lowercase, source=str(path))

    def tag(self, words):
        return [self.word_tag.get(w.lower() if self.lowercase else w) for w in words]

    def sample(self, tag, rng):
        pool = self.pools.get(tag)
        if pool is None:
            return None
        words, cdf = pool
        return words[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(words) - 1)]

    def describe(self):
        return f"lexicon of {len(self.word_tag):,} words, {len(self.pools)} tags from {self.source}"


class SpacyTagger(PosTagger):
    """spaCy's fine-grained (Penn) tags; replacement pools from the words it has tagged so far in the
    data being augmented (``observe``), by frequency."""

    def __init__(self, model: str = "en_core_web_sm"):
        try:
            import spacy
        except ImportError:
            raise NaskdError("spaCy is not installed; pass --pos-corpus FILE (e.g. CoNLL-2000's train.txt) "
                             "or `pip install spacy` plus an English model") from None
        try:
            self.nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])
        except OSError:
            raise NaskdError(f"spaCy has no model '{model}' installed; pass --pos-corpus FILE instead") from None
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def tag(self, words):
        from spacy.tokens import Doc

        doc = self.nlp(Doc(self.nlp.vocab, words=list(words)))
        tags = [t.tag_ for t in doc]
        for w, t in zip(words, tags):
            self.counts[t][w] += 1
        return tags

    def sample(self, tag, rng):
        c = self.counts.get(tag)
        if not c:
            return None
        words = sorted(c)
        p = np.asarray([c[w] for w in words], dtype=np.float64)
        return words[int(rng.choice(len(words), p=p / p.sum()))]


def default_tagger(pos_corpus: str | None, data_dir, *, lowercase: bool, cache_dir=None) -> PosTagger:
    """--pos-corpus if given; else <data-dir>/conll2000/train.txt when present; else spaCy; else an error."""
    if pos_corpus:
        return CorpusTagger.from_corpus(pos_corpus, lowercase=lowercase, cache_dir=cache_dir)
    from ..data.tasks import data_root

    try:
        cand = data_root(data_dir) / "conll2000" / "train.txt"
    except NaskdError:
        cand = None
    if cand is not None and cand.is_file():
        return CorpusTagger.from_corpus(cand, lowercase=lowercase, cache_dir=cache_dir)
    try:
        return SpacyTagger()
    except NaskdError:
        raise NaskdError("no part-of-speech source: pass --pos-corpus FILE (CoNLL columns 'word POS ...'), put "
                         "conll2000/train.txt under the data root, or install spaCy with an English model") from None
