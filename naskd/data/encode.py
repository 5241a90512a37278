"""Tokenisation with the teacher's WordPiece vocabulary, and length-bucketed batching.

Students and teachers share one tokenizer, so token positions line up for intermediate-layer
distillation. Sentence pairs are ``[CLS] a [SEP] b [SEP]`` with segment ids; tagging labels sit on each
word's first sub-token (``word_starts``), so a CRF can run over words.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import NaskdError
from .tasks import REGRESSION, TAGGING, TaskSpec

IGNORE = -100


@dataclass
class Encoded:
    """A tokenised split. Per-example arrays are ragged (lists of int32 arrays)."""

    task: str
    input_ids: list
    token_type_ids: list
    labels: np.ndarray | list           # [N] ints/floats, or per-sentence word tag arrays (tagging)
    idx: np.ndarray                     # position of each example in its source split
    word_starts: list | None = None     # tagging: sub-token position of each kept word
    meta: dict = field(default_factory=dict)
    has_label: np.ndarray | None = None # False for synthetic examples (augmentation): no gold label

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def select(self, rows) -> "Encoded":
        rows = np.asarray(rows, dtype=np.int64)
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        labels = self.labels[rows] if isinstance(self.labels, np.ndarray) else pick(self.labels)
        return Encoded(self.task, pick(self.input_ids), pick(self.token_type_ids), labels,
                       self.idx[rows], pick(self.word_starts) if self.word_starts is not None else None,
                       dict(self.meta), self.has_label[rows] if self.has_label is not None else None)

    def fingerprint(self) -> str:
        """Content hash of everything a teacher sees: token ids, segments, word starts."""
        h = hashlib.sha256()
        h.update(self.task.encode())
        for arrs in (self.input_ids, self.token_type_ids, self.word_starts or []):
            h.update(np.asarray([len(a) for a in arrs], dtype=np.int64).tobytes())
            if arrs:
                h.update(np.concatenate(arrs).astype(np.int32).tobytes())
        return h.hexdigest()

    def to_dataset(self):
        import datasets

        cols = {"idx": self.idx.tolist(), "input_ids": [a.tolist() for a in self.input_ids],
                "token_type_ids": [a.tolist() for a in self.token_type_ids]}
        cols["label"] = (self.labels.tolist() if isinstance(self.labels, np.ndarray)
                         else [a.tolist() for a in self.labels])
        if self.word_starts is not None:
            cols["word_starts"] = [a.tolist() for a in self.word_starts]
        return datasets.Dataset.from_dict(cols)


def concat_encoded(parts: list[Encoded]) -> Encoded:
    """One split from several (sentence tasks): original examples and synthetic ones, say."""
    first = parts[0]
    has = [p.has_label if p.has_label is not None else np.ones(len(p), dtype=bool) for p in parts]
    return Encoded(first.task, [x for p in parts for x in p.input_ids], [x for p in parts for x in p.token_type_ids],
                   np.concatenate([np.asarray(p.labels) for p in parts]), np.concatenate([p.idx for p in parts]),
                   None, dict(first.meta), np.concatenate(has))


def encode(spec: TaskSpec, columns, tokenizer, max_length: int) -> Encoded:
    """Tokenise a split (a ``datasets.Dataset`` or a dict of columns) for ``spec``."""
    if max_length < 8:
        raise NaskdError(f"max_length must be at least 8, got {max_length}")
    get = (lambda k: columns[k]) if isinstance(columns, dict) else (lambda k: columns[k])
    idx = np.asarray(get("idx"), dtype=np.int64)
    if spec.kind == TAGGING:
        return _encode_tagging(spec, get("tokens"), get("tags"), idx, tokenizer, max_length)
    texts = list(get("text"))
    pairs = list(get("text_pair")) if spec.is_pair else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=True)
    ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
    tts = [np.asarray(x, dtype=np.int32) for x in enc["token_type_ids"]]
    dtype = np.float32 if spec.kind == REGRESSION else np.int64
    labels = np.asarray(get("label"), dtype=dtype)
    return Encoded(spec.name, ids, tts, labels, idx, meta={"max_length": max_length})


def _encode_tagging(spec, tokens, tags, idx, tokenizer, max_length) -> Encoded:
    enc = tokenizer(list(tokens), is_split_into_words=True, truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    ids, tts, labels, starts = [], [], [], []
    truncated = 0
    for i in range(len(tokens)):
        word_ids = enc.word_ids(i)
        first, seen = [], set()
        for pos, w in enumerate(word_ids):
            if w is not None and w not in seen:
                seen.add(w)
                first.append(pos)
        n_words = len(first)
        if n_words < len(tokens[i]):
            truncated += 1
        ids.append(np.asarray(enc["input_ids"][i], dtype=np.int32))
        tts.append(np.asarray(enc["token_type_ids"][i], dtype=np.int32))
        starts.append(np.asarray(first, dtype=np.int32))
        labels.append(np.asarray(tags[i][:n_words], dtype=np.int64))
    if truncated:
        warnings.warn(
            f"{truncated} of {len(tokens)} {spec.name} sentences exceed max_length={max_length} sub-tokens "
            f"and were truncated (their last words are not scored); raise --max-length to keep them"
        )
    return Encoded(spec.name, ids, tts, labels, idx, word_starts=starts,
                   meta={"max_length": max_length, "truncated": truncated})


# ----------------------------------------------------------------------------------------- batching
def bucket_batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                   bucket: bool = True, chunk_batches: int = 50) -> list[np.ndarray]:
    """Index batches. With ``bucket``, examples of similar length share a batch.

    Shuffled runs draw a permutation from ``(seed, epoch)``, sort each window of
    ``chunk_batches * batch_size`` examples by length, cut it into batches, and shuffle the batches:
    random enough for SGD, with little padding. The order depends only on (seed, epoch), so a resumed
    run replays it exactly. Unshuffled runs (evaluation) sort everything by length.
    """
    if batch_size < 1:
        raise NaskdError(f"batch size must be at least 1, got {batch_size}")
    n = len(lengths)
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable") if bucket else np.arange(n)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    if not bucket:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    window = batch_size * chunk_batches
    batches = []
    for s in range(0, n, window):
        w = perm[s:s + window]
        w = w[np.argsort(lengths[w], kind="stable")]
        batches.extend(w[i:i + batch_size] for i in range(0, len(w), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def epoch_rows(n: int, per_epoch: int, *, seed: int, epoch: int) -> np.ndarray:
    """Rows of epoch ``epoch`` when an epoch is ``per_epoch`` of the ``n`` training rows rather than all.

    The rows form one stream of seeded permutations of range(n) laid end to end (pass p shuffled by
    ``(seed, p)``); epoch e is the slice [e * per_epoch, (e + 1) * per_epoch) of that stream. So every row
    is seen once before any is seen twice, consecutive epochs never overlap within a pass, and the rows
    depend only on (seed, epoch): a resumed run replays them exactly. For long training sets (augmented
    ones) where evaluating on dev only once per full pass would be too rare."""
    if per_epoch < 1:
        raise NaskdError(f"examples per epoch must be at least 1, got {per_epoch}")
    if n < 1:
        raise NaskdError("no training rows to draw epochs from")
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    out = []
    for p in range(start // n, (stop - 1) // n + 1):
        perm = np.random.default_rng([seed, 7919, p]).permutation(n)
        lo, hi = max(start - p * n, 0), min(stop - p * n, n)
        out.append(perm[lo:hi])
    return np.concatenate(out)


def collate(data: Encoded, rows, *, pad_id: int = 0, pad_to: int | None = None) -> dict:
    """Pad the examples ``rows`` of ``data`` to the batch maximum (or ``pad_to``) as tensors."""
    rows = np.asarray(rows)
    seqs = [data.input_ids[i] for i in rows]
    L = max(len(s) for s in seqs)
    if pad_to is not None:
        L = max(L, pad_to)
    B = len(rows)
    ids = np.full((B, L), pad_id, dtype=np.int64)
    tts = np.zeros((B, L), dtype=np.int64)
    mask = np.zeros((B, L), dtype=bool)
    for b, i in enumerate(rows):
        n = len(data.input_ids[i])
        ids[b, :n] = data.input_ids[i]
        tts[b, :n] = data.token_type_ids[i]
        mask[b, :n] = True
    batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(tts),
             "attention_mask": torch.from_numpy(mask), "rows": torch.from_numpy(rows.astype(np.int64)),
             "idx": torch.from_numpy(data.idx[rows])}
    if data.word_starts is not None:
        W = max(1, max(len(data.word_starts[i]) for i in rows))
        starts = np.zeros((B, W), dtype=np.int64)
        wmask = np.zeros((B, W), dtype=bool)
        tags = np.full((B, W), IGNORE, dtype=np.int64)
        for b, i in enumerate(rows):
            n = len(data.word_starts[i])
            starts[b, :n] = data.word_starts[i]
            wmask[b, :n] = True
            tags[b, :n] = data.labels[i]
        batch.update(word_starts=torch.from_numpy(starts), word_mask=torch.from_numpy(wmask),
                     labels=torch.from_numpy(tags))
    else:
        batch["labels"] = torch.from_numpy(np.asarray(data.labels[rows]))
    if data.has_label is not None:
        batch["has_label"] = torch.from_numpy(np.asarray(data.has_label[rows], dtype=bool))
    return batch
