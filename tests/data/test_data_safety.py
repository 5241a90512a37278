"""Issue 19, the data layer: words the tokenizer drops keep their tags (kind 4), empty sentences and loose
-DOCSTART- lines are not silent (kind 8), and data files that are not UTF-8 text end in one line naming
path:LINE and what was found (kind 6)."""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from naskd.augment.pos import CorpusTagger
from naskd.cli import main
from naskd.crf import CRF
from naskd.data.encode import collate, encode
from naskd.data.readers import read_any_file, read_columns, read_conll_file
from naskd.data.tasks import get_task
from naskd.errors import DataError, NaskdError

from ..conftest import DATA, TINY_BERT

NER = get_task("conll2003")
TAG = NER.label_index()
# characters WordPiece normalises away (format, control, replacement, private-use, a lone combining mark)
DROPPED = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\x7f", "\x01", "\ufffd",
           "\ue000", "\u0301", "\u200b\u200c"]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(TINY_BERT))


def _conll(tmp_path: Path, sentences: list[list[tuple[str, str]]], name: str = "train.txt") -> Path:
    """A conll2003 task folder holding ``name``: sentences of (word, NER tag), blank lines between them."""
    d = tmp_path / "conll2003"
    d.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join("\n".join(f"{w} NN O {t}" for w, t in s) for s in sentences) + "\n"
    (d / name).write_text(text, encoding="utf-8")
    return d / name


def _encode(tok, path: Path, max_length: int = 64):
    cols = read_conll_file(path, NER)
    cols["idx"] = list(range(len(cols["line"])))
    return cols, encode(NER, cols, tok, max_length)


# ------------------------------------------------------------------------------------------- kind 4
def test_zero_width_space_keeps_every_later_tag(tok, tmp_path):
    """The issue's example: a zero-width space between words used to shift every later tag by one."""
    sent = [("EU", "B-ORG"), ("\u200b", "O"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O"),
            ("Peter", "B-PER"), ("Blackburn", "I-PER")]
    path = _conll(tmp_path, [sent, [("Only", "O"), ("words", "O")]])
    with pytest.warns(UserWarning) as rec:
        cols, enc = _encode(tok, path)
    msgs = [str(w.message) for w in rec]
    assert any("1 conll2003 word(s) have no sub-tokens" in m and f"{path}:2 " in m for m in msgs), msgs
    assert not any("truncated" in m for m in msgs)
    assert enc.meta["truncated"] == 0 and enc.meta["no_subtoken_words"] == 1
    for i, s in enumerate([sent, [("Only", "O"), ("words", "O")]]):
        assert enc.labels[i].tolist() == [TAG[t] for _, t in s]          # its own tag on every word
        assert len(enc.word_starts[i]) == len(s)
    # the dropped word stands in as [UNK], in its own place: the input is that of the sentence with "[UNK]"
    unk = [w if w != "\u200b" else "[UNK]" for w, _ in sent]
    want = tok([unk], is_split_into_words=True)["input_ids"][0]
    assert enc.input_ids[0].tolist() == want
    pieces = tok.convert_ids_to_tokens(enc.input_ids[0].tolist())
    assert [pieces[p] for p in enc.word_starts[0]][:4] == ["eu", "[UNK]", "rejects", "german"]
    # on a batch the labels stay where the words are
    b = collate(enc, [0, 1])
    assert b["labels"][0, 3].item() == TAG["B-MISC"] and b["labels"][0, 6].item() == TAG["I-PER"]


@pytest.mark.parametrize("ch", DROPPED, ids=lambda c: "+".join(f"U{ord(x):04X}" for x in c))
def test_every_dropped_character_keeps_alignment(tok, tmp_path, ch):
    assert tok.tokenize(ch) == []                      # the tokenizer itself drops it
    sent = [("Rome", "B-LOC"), (ch, "O"), (ch, "O"), ("Smith", "B-PER"), ("said", "O")]
    path = _conll(tmp_path, [sent])
    with pytest.warns(UserWarning, match=r"2 conll2003 word\(s\) have no sub-tokens.*train\.txt:2 "):
        _, enc = _encode(tok, path)
    assert enc.labels[0].tolist() == [TAG[t] for _, t in sent]
    assert len(enc.word_starts[0]) == 5 and enc.meta["truncated"] == 0


def test_sentence_of_dropped_words_trains_and_decodes_through_the_crf(tok, tmp_path):
    only = [("\u200b", "O"), ("\u00ad", "O"), ("\ufeff", "O")]
    normal = [("EU", "B-ORG"), ("rejects", "O")]
    path = _conll(tmp_path, [normal, only, normal])
    with pytest.warns(UserWarning, match=r"3 conll2003 word\(s\).*train\.txt:4 "):
        _, enc = _encode(tok, path)
    assert enc.labels[1].tolist() == [0, 0, 0] and len(enc.word_starts[1]) == 3
    assert enc.labels[2].tolist() == [TAG["B-ORG"], TAG["O"]]      # the sentence after it is untouched
    b = collate(enc, [0, 1, 2])
    assert b["word_mask"][1].tolist() == [True, True, True]
    crf = CRF(NER.num_labels)
    emissions = torch.randn(3, b["word_mask"].shape[1], NER.num_labels, requires_grad=True)
    loss = crf.nll(emissions, b["labels"], b["word_mask"])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emissions.grad).all()
    paths, _ = crf.viterbi(emissions.detach(), b["word_mask"])
    assert paths.shape == (3, 3) and paths[0, 2].item() == paths[2, 2].item() == 0   # padding stays 0


def test_truncation_reported_only_when_real(tok, tmp_path):
    sent = [("\u200b", "O")] + [("word", "O")] * 30
    path = _conll(tmp_path, [sent, [("EU", "B-ORG")]])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _, enc = _encode(tok, path, max_length=64)
    assert enc.meta["truncated"] == 0 and not any("truncated" in str(w.message) for w in rec)
    with pytest.warns(UserWarning) as rec:
        _, enc = _encode(tok, path, max_length=16)
    assert any("1 of 2 conll2003 sentences exceed max_length=16" in str(w.message) for w in rec)
    assert enc.meta["truncated"] == 1
    assert len(enc.labels[0]) == len(enc.word_starts[0]) == 14      # [CLS] + 14 words + [SEP]
    assert enc.labels[1].tolist() == [TAG["B-ORG"]]


# ------------------------------------------------------------------------------------------- kind 8
def _tsv(tmp_path: Path, sub: str, text: str, name: str = "train.tsv") -> Path:
    d = tmp_path / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return d / name


@pytest.mark.parametrize("empty", ["", "   ", "\u200b", " \u200b\u00ad "], ids=["empty", "spaces", "zwsp", "mixed"])
def test_glue_empty_sentence_refused_with_line(tmp_path, empty):
    _tsv(tmp_path, "glue/SST-2", f"sentence\tlabel\ngood film\t1\n{empty}\t0\nbad\t0\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: empty sentence .*remove the row or fill in its text"):
        read_columns(get_task("sst2"), tmp_path, "train")


def test_glue_pair_empty_second_sentence_refused(tmp_path):
    _tsv(tmp_path, "glue/RTE", "index\tsentence1\tsentence2\tlabel\n0\tA man.\tA woman.\tentailment\n"
                               "1\tA dog.\t \tnot_entailment\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: empty second sentence \(column 3"):
        read_columns(get_task("rte"), tmp_path, "train")


def test_label_text_file_without_visible_sentence_refused(tmp_path):
    f = tmp_path / "few.txt"
    f.write_text("1 a gripping film\n0 \u200b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"few\.txt:2: no sentence after the label"):
        read_any_file(f, get_task("sst2"))


def test_docstart_without_blank_line_is_a_boundary(tmp_path):
    d = tmp_path / "conll2003"
    d.mkdir()
    (d / "train.txt").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n-DOCSTART- -X- -X- O\n"
                                 "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"1 -DOCSTART- line\(s\) without a blank line.*train\.txt:3"):
        cols = read_columns(NER, tmp_path, "train")
    assert cols["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]] and cols["line"] == [1, 4]
    assert [[NER.labels[t] for t in s] for s in cols["tags"]] == [["B-ORG", "O"], ["B-PER", "I-PER"]]


def test_docstart_in_the_usual_layout_is_silent(tmp_path):
    d = tmp_path / "conll2003"
    d.mkdir()
    (d / "train.txt").write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\n-DOCSTART- -X- -X- O\n\n"
                                 "Peter NNP B-NP B-PER\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # neither a DOCSTART nor an empty-block warning
        cols = read_columns(NER, tmp_path, "train")
    assert cols["tokens"] == [["EU"], ["Peter"]] and cols["line"] == [3, 7]


def test_real_data_reads_without_surprises(tok):
    """The shipped dev splits hold no empty sentence, loose -DOCSTART- line or word without sub-tokens: the
    new checks refuse or warn about none of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for task in ("sst2", "cola", "mrpc", "rte", "stsb", "conll2003"):
            cols = read_columns(get_task(task), DATA, "dev")
        enc = encode(NER, cols, tok, 512)
    assert enc.meta["no_subtoken_words"] == 0 and enc.meta["truncated"] == 0


# ------------------------------------------------------------------------------------------- kind 6
BAD_BYTES = {   # whole files, and the message expected after the path
    "latin1": ("sentence\tlabel\ngood film\t1\ncaf\xe9 noir\t0\n".encode("latin-1"), r":3: not UTF-8: byte 0xe9"),
    "nul": (b"sentence\tlabel\ngood film\t1\nbad\x00\t0\n", r":3: NUL byte: a binary file"),
    "utf16": ("sentence\tlabel\ngood film\t1\n".encode("utf-16"),
              r": encoded as UTF-16 \(little-endian byte-order mark\)"),
    "gzip": (gzip.compress(b"sentence\tlabel\ngood film\t1\n"), r": a gzip archive, not a UTF-8 text file"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BYTES))
def test_glue_file_not_utf8(tmp_path, kind):
    data, pattern = BAD_BYTES[kind]
    d = tmp_path / "glue/SST-2"
    d.mkdir(parents=True)
    (d / "train.tsv").write_bytes(data)
    with pytest.raises(DataError, match=r"train\.tsv" + pattern):
        read_columns(get_task("sst2"), tmp_path, "train")


def test_conll_file_not_utf8_and_directory(tmp_path):
    d = tmp_path / "conll2003"
    d.mkdir()
    (d / "train.txt").write_bytes("EU NNP B-NP B-ORG\n\nM\xfcller NNP B-NP B-PER\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.txt:3: not UTF-8: byte 0xfc \(byte 2 of the line"):
        read_columns(NER, tmp_path, "train")
    with pytest.raises(DataError, match=r"is a directory"):
        read_any_file(tmp_path, NER)


def test_data_root_that_is_a_file(tmp_path):
    f = tmp_path / "train.tsv.gz"
    f.write_bytes(gzip.compress(b"x"))
    with pytest.raises(NaskdError, match=r"data directory .*train\.tsv\.gz is a file, not a directory; pass --data-dir"):
        read_columns(get_task("sst2"), f, "train")


def test_pos_corpus_not_utf8_or_binary(tmp_path):
    f = tmp_path / "pos.txt"
    f.write_bytes(b"the DT\ngood JJ\n\nna\xefve JJ\n")
    with pytest.raises(DataError, match=r"pos\.txt:4: not UTF-8: byte 0xef"):
        CorpusTagger.from_corpus(f, cache_dir=tmp_path / "cache")
    f.write_bytes(b"the DT\n\x00\x01\x02\x03")
    with pytest.raises(DataError, match=r"pos\.txt:2: NUL byte"):
        CorpusTagger.from_corpus(f)
    with pytest.raises(DataError, match=r"POS corpus .* is a directory"):
        CorpusTagger.from_corpus(tmp_path)


def test_damaged_pos_lexicon_cache_is_rebuilt(tmp_path):
    f = tmp_path / "pos.txt"
    f.write_text("the DT\ngood JJ\nfilm NN\n", encoding="utf-8")
    first = CorpusTagger.from_corpus(f, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache/pos-lexicons").glob("*.json")
    entry.write_text(entry.read_text()[:25])           # cut short, as by a full disk
    with pytest.warns(UserWarning, match="POS lexicon cache .* is unreadable; rebuilding"):
        again = CorpusTagger.from_corpus(f, cache_dir=tmp_path / "cache")
    assert again.word_tag == first.word_tag == {"the": "DT", "good": "JJ", "film": "NN"}
    assert json.loads(entry.read_text())["word_tag"] == first.word_tag


# ------------------------------------------------------------------------------------------- the CLI
def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"naskd {command}: error: ")
    return err


def test_cli_evaluate_refuses_bad_files(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    cases = {
        "latin1.tsv": ("sentence\tlabel\ngood film\t1\ncaf\xe9\t0\n".encode("latin-1"), "latin1.tsv:3: not UTF-8: byte 0xe9"),
        "binary.tsv": (b"sentence\tlabel\n\x00\x00\x00\x01", "binary.tsv:2: NUL byte"),
        "empty.tsv": (b"sentence\tlabel\ngood film\t1\n \t0\n", "empty.tsv:3: empty sentence"),
        "utf16.txt": ("1 a good film\n".encode("utf-16"), "encoded as UTF-16"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"out-{name}"
        assert main(["evaluate", "--model", str(teacher), "--file", str(tmp_path / name), "--out", str(out)]) == 2
        assert expected in _one_line_error(capsys, "evaluate")
        assert not out.exists()


def test_cli_teacher_refuses_non_utf8_data_before_any_run_directory(tmp_path, capsys):
    d = tmp_path / "data/glue/SST-2"
    d.mkdir(parents=True)
    (d / "train.tsv").write_bytes("sentence\tlabel\nna\xefve\t1\n".encode("latin-1"))
    (d / "dev.tsv").write_bytes(b"sentence\tlabel\ngood\t1\n")
    out = tmp_path / "t"
    assert main(["teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(tmp_path / "data"),
                 "--out", str(out)]) == 2
    assert "train.tsv:2: not UTF-8: byte 0xef" in _one_line_error(capsys, "teacher")
    assert not out.exists()


def test_cli_augment_refuses_bad_pos_corpus(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    f = tmp_path / "pos.txt"
    f.write_bytes("the DT\ncaf\xe9 NN\n".encode("latin-1"))
    out = tmp_path / "aug"
    assert main(["augment", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA),
                 "--pos-corpus", str(f), "--max-train-examples", "8", "--out", str(out)]) == 2
    assert "pos.txt:2: not UTF-8: byte 0xe9" in _one_line_error(capsys, "augment")
    assert not out.exists()
