"""Readers for GLUE TSV files and CoNLL column files, returning Hugging Face ``datasets``.

GLUE files are split on tabs with quoting off: hundreds of MRPC, RTE and STS-B fields begin with a
double quote, and a CSV reader with default quoting silently merges rows. Every malformed row is
reported as ``path:LINE`` (1-based, header included) before any training starts.
"""
from __future__ import annotations

import codecs
import math
import os
import unicodedata
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError, NaskdError
from .tasks import TAGGING, REGRESSION, TaskSpec, task_dir

SPLITS = ("train", "dev")


_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32 (little-endian byte-order mark)"),
         (codecs.BOM_UTF32_BE, "UTF-32 (big-endian byte-order mark)"),
         (codecs.BOM_UTF16_LE, "UTF-16 (little-endian byte-order mark)"),
         (codecs.BOM_UTF16_BE, "UTF-16 (big-endian byte-order mark)"))
_ARCHIVES = ((b"\x1f\x8b", "a gzip archive"), (b"PK\x03\x04", "a zip archive"), (b"BZh", "a bzip2 archive"),
             (b"\xfd7zXZ\x00", "an xz archive"), (b"PAR1", "a Parquet file"))


def read_text(path: str | os.PathLike, *, what: str = "data file") -> str:
    """The text of a user's data file, decoded as UTF-8 (a leading byte-order mark dropped, as MRPC's
    train.tsv has one).

    Raises :class:`DataError` in one line for a missing path, a directory, an unreadable file, or bytes
    that are not UTF-8 text: an archive (gzip, zip, ...), a UTF-16/32 file (named by its byte-order
    mark), a binary file (NUL bytes; ``path:LINE`` of the first), or an invalid UTF-8 byte (``path:LINE``,
    the byte in hex and its column). ``what`` names the file in the messages ("POS corpus", ...)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e.strerror or e}") from None
    for bom, name in _BOMS:                        # UTF-32-LE's mark begins with UTF-16-LE's: test it first
        if data.startswith(bom):
            raise DataError(f"{path}: encoded as {name}, not UTF-8; re-save it as UTF-8 "
                            f"(e.g. iconv -f {name.split()[0]} -t UTF-8)")
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = e
    else:
        bad = None
    if bad is None and nul < 0:
        return text
    for magic, name in _ARCHIVES:                  # only a hint where the bytes are not text anyway
        if data.startswith(magic):
            raise DataError(f"{path}: {name}, not a UTF-8 text file; unpack it and pass the text file")
    if nul >= 0 and (bad is None or nul < bad.start):
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: NUL byte: a binary file (or UTF-16/32 text without a byte-order "
                        f"mark), not UTF-8 text; pass the UTF-8 text file")
    line = data.count(b"\n", 0, bad.start) + 1
    column = bad.start - (data.rfind(b"\n", 0, bad.start) + 1) + 1
    raise DataError(f"{path}:{line}: not UTF-8: byte 0x{data[bad.start]:02x} (byte {column} of the line; a legacy "
                    f"encoding such as Latin-1 or Windows-1252?); re-save the file as UTF-8, e.g. "
                    f"iconv -f WINDOWS-1252 -t UTF-8")


def _read_lines(path: Path, what: str = "data file") -> list[str]:
    return read_text(path, what=what).split("\n")


_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}


def is_blank(text: str) -> bool:
    """True when ``text`` has no visible character: empty, whitespace, or only control / format characters
    (a zero-width space, say) -- text a model would see as an empty input."""
    return all(unicodedata.category(ch) in _INVISIBLE for ch in text)


def read_glue_file(path: str | os.PathLike, spec: TaskSpec, *, header: bool | None = None) -> dict:
    """Parse a GLUE TSV into columns ``text`` (, ``text_pair``), ``label``, ``line`` (1-based line numbers).

    Raises :class:`DataError` naming ``path:LINE`` for a file that is not UTF-8 text (see :func:`read_text`),
    an empty line, a wrong column count, a label outside the task's set, a score that is not a number in
    range, and a sentence with no visible text (empty, whitespace or only invisible characters: training on
    an empty input is silently wrong, and no GLUE release has one)."""
    path = Path(path)
    lines = _read_lines(path)
    header = spec.header if header is None else header
    texts, pairs, labels, line_nos = [], [], [], []
    label_index = spec.label_index()
    for i, raw in enumerate(lines):
        lineno = i + 1
        line = raw.rstrip("\r")
        if header and i == 0:
            continue
        if line == "" and i == len(lines) - 1:
            continue  # final newline
        if line.strip() == "":
            raise DataError(f"{path}:{lineno}: empty line inside a TSV file")
        cols = line.split("\t")
        if len(cols) != spec.n_columns:
            raise DataError(
                f"{path}:{lineno}: expected {spec.n_columns} tab-separated columns for {spec.name}, "
                f"found {len(cols)}"
            )
        raw_label = cols[spec.label_column].strip()
        if spec.kind == REGRESSION:
            try:
                value = float(raw_label)
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {raw_label!r} is not a number") from None
            lo, hi = spec.score_range or (-math.inf, math.inf)
            if not math.isfinite(value) or not lo <= value <= hi:
                raise DataError(f"{path}:{lineno}: score {raw_label!r} outside [{lo}, {hi}]")
            labels.append(value)
        else:
            if raw_label not in label_index:
                raise DataError(
                    f"{path}:{lineno}: label {raw_label!r} is not one of {', '.join(spec.labels)}"
                )
            labels.append(label_index[raw_label])
        for k, c in enumerate(spec.text_columns):
            if is_blank(cols[c]):
                which = ("first", "second")[k] + " sentence" if spec.is_pair else "sentence"
                raise DataError(f"{path}:{lineno}: empty {which} (column {c + 1} has no visible text); "
                                f"remove the row or fill in its text")
        texts.append(cols[spec.text_columns[0]].strip())
        if spec.is_pair:
            pairs.append(cols[spec.text_columns[1]].strip())
        line_nos.append(lineno)
    out = {"text": texts, "label": labels, "line": line_nos}
    if spec.is_pair:
        out["text_pair"] = pairs
    return out


def _looks_like_header(first: str, spec: TaskSpec) -> bool:
    """A GLUE TSV's first line is a header when its label field is not a label (or not a number)."""
    cols = first.rstrip("\r").split("\t")
    if len(cols) != spec.n_columns:
        return False  # let the reader report the column count with its line number
    raw = cols[spec.label_column].strip()
    if spec.kind == REGRESSION:
        try:
            float(raw)
            return False
        except ValueError:
            return True
    return raw not in spec.label_index()


def read_label_text_file(path: str | os.PathLike, spec: TaskSpec) -> dict:
    """``label<space>sentence`` per line (the layout of common sentiment corpora, e.g. ``1 a gripping
    film``), for single-sentence classification tasks; labels as the task writes them."""
    path = Path(path)
    if spec.is_pair or spec.kind in (REGRESSION, TAGGING):
        raise DataError(f"{path}: the 'label sentence' format is for single-sentence classification; "
                        f"{spec.name} files are {'CoNLL columns' if spec.kind == TAGGING else 'GLUE TSV'}")
    label_index = spec.label_index()
    texts, labels, line_nos = [], [], []
    lines = _read_lines(path)
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if line.strip() == "":
            if i == len(lines) - 1:
                continue
            raise DataError(f"{path}:{i + 1}: empty line (expected 'label sentence')")
        label, _, text = line.partition(" ")
        if label not in label_index:
            raise DataError(f"{path}:{i + 1}: label {label!r} is not one of {', '.join(spec.labels)} "
                            "(expected 'label sentence' per line)")
        if is_blank(text):
            raise DataError(f"{path}:{i + 1}: no sentence after the label (expected 'label sentence' per line)")
        texts.append(text.strip())
        labels.append(label_index[label])
        line_nos.append(i + 1)
    return {"text": texts, "label": labels, "line": line_nos}


FILE_FORMATS = ("auto", "glue", "label_text", "conll")


def read_any_file(path: str | os.PathLike, spec: TaskSpec, fmt: str = "auto") -> tuple[dict, str]:
    """Read a labelled file in one of the task's formats; return (columns with ``idx``, format used).

    auto: CoNLL columns for tagging tasks; a GLUE TSV (header detected) when the first line has a tab;
    else ``label sentence`` lines."""
    path = Path(path)
    if fmt not in FILE_FORMATS:
        raise NaskdError(f"unknown file format '{fmt}'; known: {', '.join(FILE_FORMATS)}")
    if not path.is_file():
        raise DataError(f"file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    if fmt == "auto":
        if spec.kind == TAGGING:
            fmt = "conll"
        else:
            first = next((ln for ln in _read_lines(path) if ln.strip()), "")
            fmt = "glue" if "\t" in first else "label_text"
    if fmt == "conll":
        if spec.kind != TAGGING:
            raise DataError(f"{path}: CoNLL column files are for tagging tasks, not {spec.name}")
        cols = read_conll_file(path, spec)
    elif fmt == "glue":
        if spec.kind == TAGGING:
            raise DataError(f"{path}: {spec.name} reads CoNLL column files, not TSV")
        first = next((ln for ln in _read_lines(path) if ln.strip()), "")
        cols = read_glue_file(path, spec, header=_looks_like_header(first, spec))
    else:
        cols = read_label_text_file(path, spec)
    return _finish(cols, spec, str(path)), fmt


def check_iob2(tags: list[str], path: Path, first_line: int) -> None:
    prev = "O"
    for k, tag in enumerate(tags):
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            raise DataError(
                f"{path}:{first_line + k}: tag {tag} cannot follow {prev} in the IOB2 scheme"
            )
        prev = tag


def read_conll_file(path: str | os.PathLike, spec: TaskSpec, *, tag_column: int | None = None,
                    n_columns: int | None = None) -> dict:
    """Parse a CoNLL column file into ``tokens`` (words), ``tags`` (tag indices), ``pos`` per sentence,
    ``line`` (the 1-based line of each sentence's first word; word k sits on line ``line + k``) and
    ``file`` (the path, per sentence, so later stages can name ``path:LINE``).

    Sentences end at blank lines and at ``-DOCSTART-`` lines: a document boundary is a sentence boundary,
    as conlleval and seqeval read it, so a ``-DOCSTART-`` line with no blank line around it never merges
    two sentences; such lines are warned about with their ``path:LINE``, as are repeated blank lines (empty
    sentence blocks, skipped). Raises :class:`DataError` with ``path:LINE`` for a file that is not UTF-8
    text, a wrong column count, a tag outside the task's set, or an IOB2 violation."""
    path = Path(path)
    lines = _read_lines(path)
    n_columns = n_columns or spec.conll_columns
    tag_column = spec.tag_column if tag_column is None else tag_column
    tag_index = spec.label_index()
    sents, tags, pos, starts = [], [], [], []
    cur_w, cur_t, cur_p, start = [], [], [], None
    empty_blocks: list[int] = []          # line numbers of repeated blank lines (empty sentence blocks)
    loose_docstarts: list[int] = []       # -DOCSTART- lines with a word line right before or after them
    blank_run = 0

    def flush():
        if cur_w:
            check_iob2([spec.labels[t] for t in cur_t], path, start)
            sents.append(list(cur_w)); tags.append(list(cur_t)); pos.append(list(cur_p)); starts.append(start)

    def is_word_line(j: int) -> bool:
        if not 0 <= j < len(lines):
            return False
        other = lines[j].rstrip("\r")
        return other.strip() != "" and not other.startswith("-DOCSTART-")

    for i, raw in enumerate(lines):
        lineno = i + 1
        line = raw.rstrip("\r")
        if line.startswith("-DOCSTART-"):
            if is_word_line(i - 1) or is_word_line(i + 1):
                loose_docstarts.append(lineno)
            flush()
            cur_w, cur_t, cur_p, start = [], [], [], None
            blank_run = 0                 # "blank, -DOCSTART-, blank" is the usual layout, not an empty block
            continue
        if line.strip() == "":
            blank_run += 1
            if blank_run == 2 and i != len(lines) - 1:
                empty_blocks.append(lineno)
            flush()
            cur_w, cur_t, cur_p, start = [], [], [], None
            continue
        blank_run = 0
        cols = line.split()
        if len(cols) != n_columns:
            raise DataError(f"{path}:{lineno}: expected {n_columns} space-separated columns, found {len(cols)}")
        tag = cols[tag_column]
        if tag not in tag_index:
            raise DataError(
                f"{path}:{lineno}: tag {tag!r} is not in the {spec.name} tag set "
                f"({', '.join(spec.labels)})"
            )
        if start is None:
            start = lineno
        cur_w.append(cols[0]); cur_t.append(tag_index[tag]); cur_p.append(cols[1])
    flush()
    if empty_blocks:
        warnings.warn(f"{len(empty_blocks)} empty sentence block(s) (repeated blank lines) skipped: "
                      f"{_where(path, empty_blocks)}")
    if loose_docstarts:
        warnings.warn(f"{len(loose_docstarts)} -DOCSTART- line(s) without a blank line between them and a sentence "
                      f"(taken as document and sentence boundaries, so no sentences merge): "
                      f"{_where(path, loose_docstarts)}; put a blank line after each -DOCSTART- line to silence this")
    return {"tokens": sents, "tags": tags, "pos": pos, "line": starts, "file": [str(path)] * len(sents)}


def _where(path: Path, line_numbers: list[int], most: int = 5) -> str:
    return ", ".join(f"{path}:{n}" for n in line_numbers[:most]) + (" ..." if len(line_numbers) > most else "")


def _carve(n: int, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/dev carve: the same for every run and seed, so results compare."""
    rng = np.random.default_rng(spec.carve_seed)
    perm = rng.permutation(n)
    n_dev = max(1, int(round(n * spec.carve_fraction)))
    return np.sort(perm[n_dev:]), np.sort(perm[:n_dev])


def read_columns(spec: TaskSpec, data_dir, split: str) -> dict:
    """Read one split as a dict of columns (train/dev; a dev split the release lacks is carved)."""
    if split not in SPLITS:
        raise NaskdError(f"unknown split '{split}'; known splits: {', '.join(SPLITS)}")
    folder = task_dir(spec, data_dir)
    reader = read_conll_file if spec.kind == TAGGING else read_glue_file
    if split in spec.files:
        cols = reader(folder / spec.files[split], spec)
    else:
        full = reader(folder / spec.files["train"], spec)
        n = len(full["line"])
        keep_train, keep_dev = _carve(n, spec)
        keep = keep_dev if split == "dev" else keep_train
        cols = {k: [v[i] for i in keep] for k, v in full.items()}
        return _finish(cols, spec, f"{split} (carved from {folder / spec.files['train']})")
    if split == "train" and "dev" not in spec.files:
        keep_train, _ = _carve(len(cols["line"]), spec)
        cols = {k: [v[i] for i in keep_train] for k, v in cols.items()}
    return _finish(cols, spec, str(folder / spec.files[split]))


def _finish(cols: dict, spec: TaskSpec, where: str) -> dict:
    n = len(cols["line"])
    if n == 0:
        raise DataError(f"{where}: the {spec.name} split is empty")
    cols["idx"] = list(range(n))
    return cols


def load_split(spec: TaskSpec, data_dir, split: str):
    """One split as a ``datasets.Dataset`` (columns as :func:`read_columns`, plus ``idx``)."""
    import datasets

    return datasets.Dataset.from_dict(read_columns(spec, data_dir, split))


def subsample(n: int, max_n: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded subsample of size ``max_n`` (all indices when ``max_n`` is None or >= n): the first
    ``max_n`` of one seeded permutation, so smaller subsamples of a seed nest inside larger ones."""
    if not max_n or max_n >= n:
        return np.arange(n)
    if max_n < 1:
        raise NaskdError(f"--max-train-examples must be at least 1, got {max_n}")
    rng = np.random.default_rng([seed, 7919])
    return np.sort(rng.permutation(n)[:max_n])
