"""Part-of-speech information without the internet, behind one small interface.

:class:`ContextTagger` (the default) tags each sentence in context with a CRF trained on a POS-tagged corpus
in CoNLL columns (``word POS ...``, blank lines between sentences; CoNLL-2000's train file is one) by
python-crfsuite, and draws replacement words from the augmented text's own words of each tag.
:class:`CorpusTagger` is the lexicon built from such a corpus: each word gets its most frequent tag, and each
tag a replacement pool of the corpus' words with their unigram frequencies; words the corpus never saw get
no tag and are never replaced. :class:`SpacyTagger` uses spaCy's English model where it is installed. Lexicons
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


def _draw(pools: dict, tag: str, rng: np.random.Generator) -> str | None:
    """A word of ``tag`` from ``pools`` ({tag: (words, cumulative probabilities)}) by one uniform draw; None
    for a tag without a pool."""
    pool = pools.get(tag)
    if pool is None:
        return None
    words, cdf = pool
    return words[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(words) - 1)]


class PosTagger:
    """tag(words) -> one tag or None per word; sample(tag, rng) -> a word of that tag by frequency;
    prepare(sentences) -> called once with every sentence to be augmented, before any tag or sample."""

    def prepare(self, sentences: list[list[str]]) -> None:
        pass

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
        return _draw(self.pools, tag, rng)

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


def _conll_sentences(text: str, path, *, lowercase: bool) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence of a CoNLL-column corpus (``word POS ...``, blank lines between sentences)."""
    out, words, tags = [], [], []
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line.startswith("-DOCSTART-"):
            continue
        if not line:
            if words:
                out.append((words, tags))
                words, tags = [], []
            continue
        cols = line.split()
        if len(cols) < 2:
            raise DataError(f"{path}:{lineno}: expected 'word POS ...' columns, found {len(cols)} column")
        words.append(cols[0].lower() if lowercase else cols[0])
        tags.append(cols[1])
    if words:
        out.append((words, tags))
    if not out:
        raise DataError(f"{path}: no tagged words found (expected CoNLL columns 'word POS ...')")
    return out


def token_features(words: list[str], i: int) -> list[str]:
    """crfsuite features of word i in context: the word, its affixes and shape, and the words up to two
    either side (the usual feature set of a CRF POS tagger, after Ratnaparkhi 1996)."""
    w = words[i]
    f = ["b", "w=" + w, "s1=" + w[-1:], "s2=" + w[-2:], "s3=" + w[-3:], "p1=" + w[:1], "p2=" + w[:2]]
    if any(c.isdigit() for c in w):
        f.append("digit")
    if "-" in w:
        f.append("hyphen")
    if not any(c.isalnum() for c in w):
        f.append("punct")
    if w[:1].isupper():
        f.append("title")
    for d in (-2, -1, 1, 2):
        j = i + d
        f.append(f"w{d:+d}=" + (words[j] if 0 <= j < len(words) else ("<s>" if j < 0 else "</s>")))
    if i > 0:
        f.append("w-1|w=" + words[i - 1] + "|" + w)
    if i + 1 < len(words):
        f.append("w|w+1=" + w + "|" + words[i + 1])
    return f


class ContextTagger(PosTagger):
    """Tags in context with a linear-chain CRF (python-crfsuite, L-BFGS with L1 0.1 and L2 0.01) trained on
    a POS-tagged CoNLL-column corpus, its accuracy measured on a seeded held-out tenth of the corpus'
    sentences (``accuracy``, ``heldout_tokens``); the model is trained on the other nine tenths and cached
    under ``<cache_dir>/pos-taggers/`` by the corpus' content hash. Replacement words come from the text
    being augmented (:meth:`prepare` tags every sentence in context first): for each tag, the words the
    task itself uses with that tag, by their unigram frequency (Tang et al. 2019, section 3.3). Every word
    gets a tag."""

    HELDOUT = 0.1
    SEED = 2000

    def __init__(self, model_path: Path, info: dict, *, lowercase: bool):
        import pycrfsuite

        self.tagger = pycrfsuite.Tagger()
        self.tagger.open(str(model_path))
        self.info, self.lowercase = info, lowercase
        self.accuracy = float(info["accuracy"])
        self.pools: dict[str, tuple[list[str], np.ndarray]] = {}
        self._tags: dict[tuple, list[str]] = {}
        self.task_words = 0

    @classmethod
    def from_corpus(cls, path: str | os.PathLike, *, lowercase: bool = True, cache_dir=None,
                    max_iterations: int = 100, max_sentences: int | None = None) -> "ContextTagger":
        """Train (or read from the cache) the tagger of a CoNLL-column corpus; :class:`DataError` in one line
        for a missing, unreadable or malformed corpus (as :meth:`CorpusTagger.from_corpus`)."""
        import pycrfsuite

        from ..utils.io import atomic_path

        path = Path(path)
        if not path.exists():
            raise DataError(f"POS corpus {path} does not exist; pass --pos-corpus FILE (CoNLL columns "
                            "'word POS ...', e.g. CoNLL-2000's train.txt)")
        text = read_text(path, what="POS corpus")
        sents = _conll_sentences(text, path, lowercase=lowercase)
        if max_sentences is not None:
            sents = sents[:max_sentences]
        key = (f"{file_sha256(path)[:20]}-{'lower' if lowercase else 'cased'}-{len(sents)}-{max_iterations}")
        root = Path(cache_dir) / "pos-taggers" if cache_dir is not None else None
        if root is not None and (root / f"{key}.crfsuite").is_file() and (root / f"{key}.json").is_file():
            try:
                info = json.loads((root / f"{key}.json").read_text(encoding="utf-8"))
                return cls(root / f"{key}.crfsuite", info, lowercase=lowercase)
            except (OSError, ValueError, KeyError, TypeError):
                warnings.warn(f"POS tagger cache {root / key}.* is unreadable; training it again from {path}")
        rng = np.random.default_rng(cls.SEED)
        order = rng.permutation(len(sents))
        n_held = max(1, int(round(cls.HELDOUT * len(sents))))
        held, train = [sents[i] for i in order[:n_held]], [sents[i] for i in order[n_held:]]
        if not train:
            raise DataError(f"{path}: too few sentences ({len(sents)}) to train and test a POS tagger")
        trainer = pycrfsuite.Trainer(verbose=False)
        for words, tags in train:
            trainer.append([token_features(words, i) for i in range(len(words))], tags)
        trainer.set_params({"c1": 0.1, "c2": 0.01, "max_iterations": max_iterations,
                            "feature.possible_transitions": True})
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.crfsuite"
            trainer.train(str(model))
            tagger = pycrfsuite.Tagger()
            tagger.open(str(model))
            right = total = 0
            for words, tags in held:
                pred = tagger.tag([token_features(words, i) for i in range(len(words))])
                right += sum(p == t for p, t in zip(pred, tags))
                total += len(tags)
            info = {"source": str(path), "lowercase": lowercase, "accuracy": right / total, "heldout_tokens": total,
                    "heldout_sentences": len(held), "train_sentences": len(train), "max_iterations": max_iterations,
                    "library": "python-crfsuite"}
            tagger.close()
            if root is None:              # no cache: a folder of its own that outlives this call
                root = Path(tempfile.mkdtemp(prefix="naskd-pos-"))
            root.mkdir(parents=True, exist_ok=True)
            with atomic_path(root / f"{key}.crfsuite") as dst:
                Path(dst).write_bytes(model.read_bytes())
            write_json(root / f"{key}.json", info)
            return cls(root / f"{key}.crfsuite", info, lowercase=lowercase)

    def _norm(self, words):
        return [w.lower() for w in words] if self.lowercase else list(words)

    def tag(self, words):
        words = self._norm(words)
        key = tuple(words)
        if key not in self._tags:
            self._tags[key] = self.tagger.tag([token_features(words, i) for i in range(len(words))]) if words else []
        return list(self._tags[key])

    def prepare(self, sentences):
        counts: dict[str, Counter] = defaultdict(Counter)
        for words in sentences:
            for w, t in zip(self._norm(words), self.tag(words)):
                counts[t][w] += 1
        self.pools = {}
        for t, c in counts.items():
            ws = sorted(c)
            p = np.asarray([c[w] for w in ws], dtype=np.float64)
            self.pools[t] = (ws, np.cumsum(p) / p.sum())
        self.task_words = sum(sum(c.values()) for c in counts.values())

    def sample(self, tag, rng):
        return _draw(self.pools, tag, rng)

    def describe(self):
        return (f"CRF tagger (python-crfsuite) trained on {self.info['train_sentences']:,} sentences of "
                f"{self.info['source']}, held-out accuracy {self.accuracy:.4f} on {self.info['heldout_tokens']:,} "
                f"tokens; replacement pools from the augmented text itself ({self.task_words:,} words, "
                f"{len(self.pools)} tags)")


POS_TAGGERS = ("context", "lexicon")


def default_tagger(pos_corpus: str | None, data_dir, *, lowercase: bool, cache_dir=None,
                   kind: str = "context") -> PosTagger:
    """--pos-corpus if given; else <data-dir>/conll2000/train.txt when present; else spaCy; else an error.
    ``kind``: context (:class:`ContextTagger`, in-context tags, replacements from the task's text) or lexicon
    (:class:`CorpusTagger`, each word's most frequent tag in the corpus, replacements from the corpus)."""
    if kind not in POS_TAGGERS:
        raise NaskdError(f"unknown POS tagger '{kind}'; known: {', '.join(POS_TAGGERS)}")
    make = ContextTagger.from_corpus if kind == "context" else CorpusTagger.from_corpus
    if pos_corpus:
        return make(pos_corpus, lowercase=lowercase, cache_dir=cache_dir)
    from ..data.tasks import data_root

    try:
        cand = data_root(data_dir) / "conll2000" / "train.txt"
    except NaskdError:
        cand = None
    if cand is not None and cand.is_file():
        return make(cand, lowercase=lowercase, cache_dir=cache_dir)
    try:
        return SpacyTagger()
    except NaskdError:
        raise NaskdError("no part-of-speech source: pass --pos-corpus FILE (CoNLL columns 'word POS ...'), put "
                         "conll2000/train.txt under the data root, or install spaCy with an English model") from None
