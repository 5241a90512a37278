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
    """Tokenise a split (a ``datasets.Dataset`` or a dict of columns) for ``spec``: at most ``max_length``
    sub-tokens per example, special tokens included.

    Sentence tasks read ``text`` (, ``text_pair``), ``label``, ``idx``; labels become an (N,) array. Tagging
    reads ``tokens``, ``tags``, ``idx`` (and ``line``, ``file`` for messages): per sentence, ``word_starts``
    and ``labels`` with one entry per kept word, tags taken by word index (see :func:`_encode_tagging` for
    words the tokenizer drops and for truncation). Raises :class:`NaskdError` for ``max_length`` below 8."""
    if max_length < 8:
        raise NaskdError(f"max_length must be at least 8, got {max_length}")
    get = (lambda k: columns[k]) if isinstance(columns, dict) else (lambda k: columns[k])
    idx = np.asarray(get("idx"), dtype=np.int64)
    if spec.kind == TAGGING:
        return _encode_tagging(spec, get("tokens"), get("tags"), idx, tokenizer, max_length, columns)
    texts = list(get("text"))
    pairs = list(get("text_pair")) if spec.is_pair else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=True)
    ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
    tts = [np.asarray(x, dtype=np.int32) for x in enc["token_type_ids"]]
    dtype = np.float32 if spec.kind == REGRESSION else np.int64
    labels = np.asarray(get("label"), dtype=dtype)
    return Encoded(spec.name, ids, tts, labels, idx, meta={"max_length": max_length})


def _column(columns, key: str):
    """``columns[key]`` of a dict of columns or a ``datasets.Dataset``; None where there is no such column."""
    names = columns.keys() if isinstance(columns, dict) else columns.column_names
    return columns[key] if key in names else None


def words_without_subtokens(words, tokenizer) -> set[str]:
    """The distinct ``words`` that ``tokenizer`` turns into no sub-token at all, found by asking it (each word
    alone, as ``is_split_into_words`` treats it): for WordPiece, words made only of characters its
    normaliser removes -- zero-width and other format characters (U+200B..U+200D, U+2060, U+FEFF, the soft
    hyphen U+00AD), control characters, the replacement character U+FFFD, combining marks alone (accents are
    stripped when lowercasing) and private-use characters."""
    distinct = sorted(set(words))
    if not distinct:
        return set()
    ids = tokenizer(distinct, add_special_tokens=False)["input_ids"]
    return {w for w, x in zip(distinct, ids) if len(x) == 0}


def _encode_tagging(spec, tokens, tags, idx, tokenizer, max_length, columns=None) -> Encoded:
    """Tagging: every word's tag stays on that word, whatever the tokenizer does to it.

    Labels are taken by word index (``word_ids``) for the words whose first sub-token fits in
    ``max_length``, so ``labels[i]`` and ``word_starts[i]`` have one entry per kept word, in order. Only
    truncation drops words, and only a sentence's last words: those sentences are counted in
    ``meta["truncated"]`` and warned about.

    A word the tokenizer turns into no sub-token (see :func:`words_without_subtokens`; a zero-width space
    is the common case) would otherwise vanish from the input and take its tag with it. Such a word is
    given to the model as the tokenizer's unknown token (``[UNK]``) instead: it keeps its place, its gold
    tag, and a prediction of its own -- what the model predicts for a word it cannot read at that place,
    exactly as if the data held ``[UNK]`` there. A sentence made only of such words is therefore a
    sentence of ``[UNK]`` words: trained and scored like any other, never an empty input to the CRF. They
    are counted in ``meta["no_subtoken_words"]`` and warned about with the first ``path:LINE`` (when the
    columns carry ``file`` and ``line``, as :func:`naskd.data.readers.read_conll_file` gives them).
    Raises :class:`NaskdError` when such words exist and the tokenizer has no unknown token."""
    tokens = [list(ws) for ws in tokens]
    dropped = words_without_subtokens((w for ws in tokens for w in ws), tokenizer)
    n_dropped, first = 0, None
    if dropped:
        for i, ws in enumerate(tokens):
            for k, w in enumerate(ws):
                if w in dropped:
                    n_dropped += 1
                    if first is None:
                        first = (i, k)
        where = _word_place(columns, *first)
        unk = getattr(tokenizer, "unk_token", None)
        if unk is None:
            raise NaskdError(f"{where}: word {tokens[first[0]][first[1]]!r} has no sub-tokens for this tokenizer, "
                             f"which has no unknown token to stand in for it ({n_dropped} such words); remove "
                             "those characters from the data")
        warnings.warn(
            f"{n_dropped} {spec.name} word(s) have no sub-tokens for this tokenizer (zero-width, control or "
            f"format characters, lone combining marks), first at {where} ({tokens[first[0]][first[1]]!r}); each "
            f"is read as {unk} and keeps its own tag; remove those characters from the data to silence this"
        )
        tokens = [[unk if w in dropped else w for w in ws] for ws in tokens]
    enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    ids, tts, labels, starts = [], [], [], []
    truncated = 0
    for i in range(len(tokens)):
        first_pos: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids(i)):
            if w is not None and w not in first_pos:
                first_pos[w] = pos
        kept = sorted(first_pos)
        if kept != list(range(len(kept))):       # every word has a sub-token now: only a suffix can go
            raise RuntimeError(f"sentence {i}: words {sorted(set(range(len(tokens[i]))) - set(kept))} lost "
                               "inside the sentence by the tokenizer")
        if len(kept) < len(tokens[i]):
            truncated += 1
        ids.append(np.asarray(enc["input_ids"][i], dtype=np.int32))
        tts.append(np.asarray(enc["token_type_ids"][i], dtype=np.int32))
        starts.append(np.asarray([first_pos[w] for w in kept], dtype=np.int32))
        labels.append(np.asarray([tags[i][w] for w in kept], dtype=np.int64))
    if truncated:
        warnings.warn(
            f"{truncated} of {len(tokens)} {spec.name} sentences exceed max_length={max_length} sub-tokens "
            f"and were truncated (their last words are not scored); raise --max-length to keep them"
        )
    return Encoded(spec.name, ids, tts, labels, idx, word_starts=starts,
                   meta={"max_length": max_length, "truncated": truncated, "no_subtoken_words": n_dropped})


def _word_place(columns, i: int, k: int) -> str:
    """``path:LINE`` of word ``k`` of sentence ``i`` where the columns say (else a sentence and word number)."""
    lines = _column(columns, "line") if columns is not None else None
    files = _column(columns, "file") if columns is not None else None
    if lines is None:
        return f"sentence {i + 1}, word {k + 1}"
    line = int(lines[i]) + k
    return f"{files[i]}:{line}" if files is not None else f"line {line}"


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
