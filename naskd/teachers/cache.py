"""Teacher output cache: logits and chosen hidden states, computed once, memory-mapped thereafter.

Key: content hashes of the teacher's weights and of the tokenised data (token ids, segments, word
starts, which also capture the tokenizer and ``max_length``). Under the key, one ``.npy`` file per item:
``logits`` and ``h{layer}_{positions}`` (float16), where positions is ``cls`` or ``mean`` ([N, D]) or
``tokens`` (flat [sum L_i, D] with per-example offsets). Asking for an item the entry lacks computes only the missing
items, in one teacher pass. Files are written to temporary names and renamed, so a killed run leaves no
half-written item.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.encode import Encoded, bucket_batches, collate
from ..errors import NaskdError
from ..utils.cachedir import default_cache_dir
from ..utils.io import clean_stale_temps, temp_name, write_json
from ..utils.progress import bar
from ..utils.runtime import to_device
from .model import load_teacher, read_teacher_info, teacher_fingerprint

CACHE_FORMAT = 1
POSITIONS = ("cls", "mean", "tokens")


@dataclass(frozen=True)
class HiddenRequest:
    """Hidden states of teacher ``layer`` (0 = embeddings) at ``positions``: 'cls' ([CLS] state),
    'mean' (mean over real tokens) or 'tokens' (every real token)."""

    layer: int
    positions: str = "cls"

    @property
    def item(self) -> str:
        return f"h{self.layer}_{self.positions}"


class TeacherOutputs:
    """Read-only view of cached outputs for one encoded split, indexed by row of that split."""

    def __init__(self, folder: Path, data: Encoded):
        self.folder = folder
        self.n = len(data)
        self.token_offsets = np.concatenate([[0], np.cumsum(data.lengths)]).astype(np.int64)
        self.word_offsets = None
        if data.word_starts is not None:
            self.word_offsets = np.concatenate(
                [[0], np.cumsum([len(w) for w in data.word_starts])]).astype(np.int64)
        self._arrays: dict[str, np.ndarray] = {}

    def expected_rows(self, item: str) -> int:
        """Length of the first axis of ``item`` for this split: rows, words (tagging logits) or tokens."""
        if item == "logits":
            return self.n if self.word_offsets is None else int(self.word_offsets[-1])
        return int(self.token_offsets[-1]) if item.endswith("_tokens") else self.n

    def array(self, item: str) -> np.ndarray:
        """The cached array of ``item``, memory-mapped. Raises ``KeyError`` when the entry lacks it and
        :class:`NaskdError` (naming the file and the entry to delete) when the file is truncated, corrupt,
        holds pickled objects, or has another length than this split needs."""
        if item not in self._arrays:
            path = self.folder / f"{item}.npy"
            if not path.is_file():
                raise KeyError(item)
            try:
                arr = np.load(path, mmap_mode="r")          # allow_pickle stays False: no object arrays
            except (ValueError, EOFError, OSError) as e:
                # numpy's own message may advise allow_pickle=True: not repeated
                raise corrupt_entry(path, f"{type(e).__name__}: truncated or not a .npy array") from None
            want = self.expected_rows(item)
            if arr.ndim == 0 or arr.shape[0] != want or arr.dtype.kind != "f":
                raise corrupt_entry(path, f"shape {tuple(arr.shape)} {arr.dtype}, expected {want} float rows")
            self._arrays[item] = arr
        return self._arrays[item]

    @property
    def logits(self) -> np.ndarray:
        return self.array("logits")

    def logits_for(self, rows) -> torch.Tensor:
        """[B, C] (or [B, W, T] padded with zeros for tagging)."""
        arr = self.array("logits")
        if self.word_offsets is None:
            return torch.from_numpy(np.asarray(arr[np.asarray(rows)], dtype=np.float32))
        return self._ragged(arr, self.word_offsets, rows)

    def hidden_for(self, req: HiddenRequest, rows) -> torch.Tensor:
        """[B, D] for 'cls' and 'mean'; [B, L, D] zero-padded for 'tokens' (float32)."""
        arr = self.array(req.item)
        if req.positions != "tokens":
            return torch.from_numpy(np.asarray(arr[np.asarray(rows)], dtype=np.float32))
        return self._ragged(arr, self.token_offsets, rows)

    @staticmethod
    def _ragged(arr, offsets, rows) -> torch.Tensor:
        rows = np.asarray(rows)
        lens = offsets[rows + 1] - offsets[rows]
        out = np.zeros((len(rows), int(lens.max()) if len(rows) else 0) + arr.shape[1:], dtype=np.float32)
        for b, i in enumerate(rows):
            out[b, : lens[b]] = arr[offsets[i]: offsets[i + 1]]
        return torch.from_numpy(out)


def corrupt_entry(path: Path, why: str) -> NaskdError:
    """The error for an unreadable file of a cache entry: the way out is to delete that entry (recomputed on
    the next run)."""
    return NaskdError(f"teacher output cache file {path} is unreadable ({why}); delete that cache entry "
                      f"(rm -r {path.parent}) and run again: it is recomputed from the teacher")


class ConcatOutputs:
    """Teacher outputs of several cached parts seen as one split: ``parts`` is a list of
    (TeacherOutputs, local rows); global row r is the r-th of the concatenated local rows."""

    def __init__(self, parts: list[tuple[TeacherOutputs, np.ndarray]]):
        self.parts = parts
        self.which = np.concatenate([np.full(len(r), k) for k, (_, r) in enumerate(parts)])
        self.local = np.concatenate([np.asarray(r) for _, r in parts])
        self.n = len(self.local)

    def array(self, item: str) -> np.ndarray:
        return np.concatenate([np.asarray(o.array(item))[np.asarray(r)] for o, r in self.parts])

    def _gather(self, fetch, rows) -> torch.Tensor:
        rows = np.asarray(rows)
        pieces = []
        for k in np.unique(self.which[rows]):
            sel = np.nonzero(self.which[rows] == k)[0]
            pieces.append((sel, fetch(self.parts[k][0], self.local[rows[sel]])))
        # token-level pieces may be padded to different lengths: pad to the longest
        shape = list(pieces[0][1].shape)
        shape[0] = len(rows)
        if len(shape) > 2:
            shape[1] = max(p.shape[1] for _, p in pieces)
        out = torch.zeros(shape, dtype=pieces[0][1].dtype)
        for sel, t in pieces:
            idx = torch.from_numpy(sel)
            if t.dim() > 2:
                out[idx, : t.shape[1]] = t
            else:
                out[idx] = t
        return out

    def logits_for(self, rows) -> torch.Tensor:
        return self._gather(lambda o, r: o.logits_for(r), rows)

    def hidden_for(self, req: "HiddenRequest", rows) -> torch.Tensor:
        return self._gather(lambda o, r: o.hidden_for(req, r), rows)


class TeacherCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_cache_dir(root)

    def key(self, teacher_dir: str | os.PathLike, data: Encoded) -> str:
        import hashlib

        payload = json.dumps({"format": CACHE_FORMAT, "teacher": teacher_fingerprint(teacher_dir),
                              "data": data.fingerprint()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def has(self, teacher_dir: str | os.PathLike, data: Encoded, hidden: list[HiddenRequest] = ()) -> bool:
        """Whether every wanted item of ``data`` is cached already (no teacher pass needed)."""
        folder = self.root / self.key(teacher_dir, data)
        return all((folder / f"{it}.npy").is_file() for it in ["logits"] + [r.item for r in hidden])

    def get(self, teacher_dir: str | os.PathLike, data: Encoded, hidden: list[HiddenRequest] = (), *,
            device: torch.device | str = "cpu", batch_size: int = 128, split: str = "") -> TeacherOutputs:
        """Outputs for ``data``; runs the teacher only for items not yet cached under the key."""
        for r in hidden:
            if r.positions not in POSITIONS:
                raise NaskdError(f"hidden-state positions must be one of {POSITIONS}, got {r.positions!r}")
        info = read_teacher_info(teacher_dir)
        n_layers = int(info["num_layers"])
        for r in hidden:
            if not 0 <= r.layer <= n_layers:
                raise NaskdError(f"teacher {teacher_dir} has layers 0..{n_layers}; layer {r.layer} was asked for")
        folder = self.root / self.key(teacher_dir, data)
        wanted = ["logits"] + sorted({r.item for r in hidden})
        missing = [it for it in wanted if not (folder / f"{it}.npy").is_file()]
        if missing:
            folder.mkdir(parents=True, exist_ok=True)
            reqs = [r for r in set(hidden) if r.item in missing]
            # a cache miss must not change the caller's random stream (building the teacher draws
            # random init weights), or a run would differ depending on what was cached
            with torch.random.fork_rng(devices=[]):
                self._compute(Path(teacher_dir), data, folder, reqs, "logits" in missing,
                              torch.device(device), batch_size, split)
        outputs = TeacherOutputs(folder, data)
        for item in wanted:                   # a truncated or corrupt array is reported now, not mid-training
            outputs.array(item)
        return outputs

    def _compute(self, teacher_dir: Path, data: Encoded, folder: Path, reqs: list[HiddenRequest],
                 want_logits: bool, device: torch.device, batch_size: int, split: str) -> None:
        meta_path = folder / "meta.json"
        meta = _read_meta(meta_path)          # before the teacher pass: a corrupt record is reported first
        model, tokenizer, info = load_teacher(teacher_dir)
        model.to(device).eval()
        pad_id = tokenizer.pad_token_id or 0
        n = len(data)
        tok_off = np.concatenate([[0], np.cumsum(data.lengths)]).astype(np.int64)
        word_off = None
        if data.word_starts is not None:
            word_off = np.concatenate([[0], np.cumsum([len(w) for w in data.word_starts])]).astype(np.int64)
        D = int(info["hidden_size"])
        C = int(info["num_labels"])
        tmp: dict[str, tuple[Path, np.ndarray]] = {}

        clean_stale_temps(folder, recursive=False)      # arrays of a killed labelling of this entry

        def open_tmp(item, shape, dtype):
            path = folder / f"{temp_name(item + '.npy')}memmap.tmp.npy"
            tmp[item] = (path, np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape))

        if want_logits:
            shape = (int(word_off[-1]), C) if word_off is not None else ((n, C) if C > 1 else (n,))
            open_tmp("logits", shape, np.float32)
        for r in reqs:
            rows_total = int(tok_off[-1]) if r.positions == "tokens" else n
            open_tmp(r.item, (rows_total, D), np.float16)
        need_hidden = bool(reqs)
        t0 = time.perf_counter()
        batches = bucket_batches(data.lengths, batch_size, seed=0, epoch=0, shuffle=False)
        pbar = bar(n, f"teacher outputs {split}".strip(), unit="ex")
        with torch.no_grad():
            for rows in batches:
                batch = to_device(collate(data, rows, pad_id=pad_id), device)
                out = model(**batch, output_hidden_states=need_hidden)
                if want_logits:
                    lg = out["logits"].float().cpu().numpy()
                    arr = tmp["logits"][1]
                    for b, i in enumerate(rows):
                        if word_off is not None:
                            arr[word_off[i]: word_off[i + 1]] = lg[b, : word_off[i + 1] - word_off[i]]
                        else:
                            arr[i] = lg[b]
                for r in reqs:
                    hs = out["hidden_states"][r.layer].float()
                    arr = tmp[r.item][1]
                    if r.positions == "mean":
                        m = batch["attention_mask"].unsqueeze(-1).float()
                        arr[rows] = ((hs * m).sum(1) / m.sum(1)).cpu().numpy().astype(np.float16)
                        continue
                    h = hs.cpu().numpy().astype(np.float16)
                    if r.positions == "cls":
                        arr[rows] = h[:, 0]
                    else:
                        for b, i in enumerate(rows):
                            arr[tok_off[i]: tok_off[i + 1]] = h[b, : tok_off[i + 1] - tok_off[i]]
                pbar.update(len(rows))
        pbar.close()
        for item, (path, arr) in tmp.items():
            arr.flush()
            del arr
            os.replace(path, folder / f"{item}.npy")
        meta.update({"teacher": str(teacher_dir.resolve()), "task": data.task, "examples": n,
                     "max_length": data.meta.get("max_length")})
        meta["passes"].append({"items": sorted(tmp), "seconds": round(time.perf_counter() - t0, 2),
                               "device": str(device), "split": split})
        write_json(meta_path, meta)


def _read_meta(path: Path) -> dict:
    """The record of an entry's teacher passes (``{"passes": [...]}`` when there is none yet)."""
    if not path.is_file():
        return {"passes": []}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise corrupt_entry(path, f"{type(e).__name__}: not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("passes"), list):
        raise corrupt_entry(path, "not a record of teacher passes")
    return meta
