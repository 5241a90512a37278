"""Tang et al. 2019's augmentation procedure ("Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks", section 3.3), deterministic per example.

For each example, ``n_iter`` times: walk the words with one uniform draw u each; u < p_mask replaces the
word by ``[MASK]``; p_mask <= u < p_mask + p_pos replaces it by a word of the same part of speech drawn by
unigram frequency (never the word itself where the pool has another; words the tagger does not tag stay
as they are; the default tagger tags every word in context and draws from the task's own words, see
naskd.augment.pos); the two are mutually exclusive. Then with probability p_ng keep only a random n-gram, n
uniform in 1..5. Sentence pairs cycle through changing the first sentence only, the second only, and
both. Duplicates and copies of any original are dropped.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .pos import PosTagger


@dataclass(frozen=True)
class AugmentSettings:
    n_iter: int = 20
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    max_ngram: int = 5
    mask_token: str = "[MASK]"

    def check(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {v}")
        if self.p_mask + self.p_pos > 1.0:
            raise ConfigError(f"--p-mask + --p-pos must be at most 1 (one draw decides between them), got "
                              f"{self.p_mask} + {self.p_pos}")
        if self.n_iter < 1:
            raise ConfigError(f"--n-iter must be at least 1, got {self.n_iter}")
        if self.max_ngram < 1:
            raise ConfigError(f"max_ngram must be at least 1, got {self.max_ngram}")


def perturb(words: list[str], tags: list, tagger: PosTagger, s: AugmentSettings, rng: np.random.Generator,
            stats: Counter) -> list[str]:
    """One draw of masking / POS replacement over ``words``, then the n-gram step."""
    u = rng.random(len(words))
    out = []
    for w, tag, x in zip(words, tags, u):
        if x < s.p_mask:
            out.append(s.mask_token)
            stats["masked"] += 1
        elif x < s.p_mask + s.p_pos:
            new = None
            if tag is not None:
                for _ in range(10):          # another word than itself, where the pool has one
                    new = tagger.sample(tag, rng)
                    if new != w:
                        break
            if new is None:
                out.append(w)
                stats["pos_unknown"] += 1
            else:
                out.append(new)
                stats["pos_replaced"] += 1
        else:
            out.append(w)
    stats["words"] += len(words)
    stats["perturbed"] += 1
    if rng.random() < s.p_ng and out:
        n = int(rng.integers(1, s.max_ngram + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start:start + n]
        stats["ngram"] += 1
    return out


def augment_example(text: str, pair: str | None, tagger: PosTagger, s: AugmentSettings,
                    rng: np.random.Generator, stats: Counter) -> list[tuple[str, str | None]]:
    """The distinct synthetic versions of one example (its original excluded)."""
    a = text.split()
    b = pair.split() if pair is not None else None
    ta = tagger.tag(a)
    tb = tagger.tag(b) if b is not None else None
    original = (" ".join(a), " ".join(b) if b is not None else None)
    seen, out = {original}, []
    for i in range(s.n_iter):
        mode = i % 3 if b is not None else 0          # 0: first only, 1: second only, 2: both
        na = perturb(a, ta, tagger, s, rng, stats) if mode in (0, 2) else a
        nb = (perturb(b, tb, tagger, s, rng, stats) if mode in (1, 2) else b) if b is not None else None
        cand = (" ".join(na), " ".join(nb) if nb is not None else None)
        stats["drawn"] += 1
        if not cand[0] or (nb is not None and not cand[1]):
            stats["empty"] += 1
            continue
        if cand in seen:
            stats["duplicates"] += 1
            continue
        seen.add(cand)
        out.append(cand)
    return out


def augment_texts(texts: list[str], pairs: list[str] | None, source_idx: list[int], tagger: PosTagger,
                  s: AugmentSettings, *, seed: int, progress=None) -> tuple[dict, Counter]:
    """Augment a split: columns ``text`` (, ``text_pair``), ``source_idx``; and counts of what happened.
    Each example draws from its own generator seeded by (seed, source index), so the output does not
    depend on batching or on which other examples are augmented. Across the split, a synthetic example
    equal to an original or to an earlier synthetic one is dropped."""
    s.check()
    stats: Counter = Counter()
    tagger.prepare([t.split() for t in texts] + ([p.split() for p in pairs] if pairs is not None else []))
    originals = {(t, p if pairs is not None else None) for t, p in
                 zip((" ".join(t.split()) for t in texts),
                     (" ".join(p.split()) for p in pairs) if pairs is not None else [None] * len(texts))}
    seen = set(originals)
    cols: dict = {"text": [], "source_idx": []}
    if pairs is not None:
        cols["text_pair"] = []
    for k, text in enumerate(texts):
        rng = np.random.default_rng([seed, int(source_idx[k]), 104729])
        for cand in augment_example(text, pairs[k] if pairs is not None else None, tagger, s, rng, stats):
            if cand in seen:
                stats["duplicates"] += 1
                continue
            seen.add(cand)
            cols["text"].append(cand[0])
            if pairs is not None:
                cols["text_pair"].append(cand[1])
            cols["source_idx"].append(int(source_idx[k]))
        if progress is not None:
            progress.update(1)
    stats["kept"] = len(cols["text"])
    return cols, stats
