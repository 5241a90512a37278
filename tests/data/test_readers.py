from pathlib import Path

import pytest

from naskd.data.readers import load_split, read_columns, subsample
from naskd.data.tasks import get_task, task_names
from naskd.errors import DataError, NaskdError

from ..conftest import DATA

# Row counts from ../shared/data/README.md (CoNLL-2000: 8,936 sentences, carved 90/10).
EXPECTED = {
    ("sst2", "train"): 67349, ("sst2", "dev"): 872,
    ("cola", "train"): 8551, ("cola", "dev"): 1043,
    ("mrpc", "train"): 3668, ("mrpc", "dev"): 408,
    ("rte", "train"): 2490, ("rte", "dev"): 277,
    ("stsb", "train"): 5749, ("stsb", "dev"): 1500,
    ("conll2003", "train"): 14041, ("conll2003", "dev"): 3250,
}


@pytest.mark.parametrize("task,split", sorted(EXPECTED))
def test_row_counts_match_release(task, split):
    cols = read_columns(get_task(task), DATA, split)
    assert len(cols["idx"]) == EXPECTED[(task, split)]


def test_conll2000_dev_is_a_deterministic_disjoint_carve():
    spec = get_task("conll2000")
    tr, dv = read_columns(spec, DATA, "train"), read_columns(spec, DATA, "dev")
    assert len(tr["line"]) + len(dv["line"]) == 8936
    assert len(dv["line"]) == round(0.1 * 8936)
    assert not set(tr["line"]) & set(dv["line"])
    assert read_columns(spec, DATA, "dev")["line"] == dv["line"]
    # sentence tokens count matches the README's 211,727 tokens
    assert sum(map(len, tr["tokens"])) + sum(map(len, dv["tokens"])) == 211727


def test_mrpc_byte_order_mark_and_pairs():
    cols = read_columns(get_task("mrpc"), DATA, "train")
    assert cols["text"][0].startswith("Amrozi accused his brother")
    assert cols["text_pair"][0].startswith("Referring to him as only")
    assert cols["label"][0] == 1 and cols["line"][0] == 2


def test_quotes_are_not_merged():
    # RTE/STS-B fields starting with '"' must stay single rows (quoting off)
    cols = read_columns(get_task("stsb"), DATA, "train")
    assert any(t.startswith('"') for t in cols["text"] + cols["text_pair"])
    assert all(0.0 <= s <= 5.0 for s in cols["label"])


def test_labels_and_kinds():
    rte = read_columns(get_task("rte"), DATA, "dev")
    assert set(rte["label"]) == {0, 1}
    cola = read_columns(get_task("cola"), DATA, "train")
    assert cola["text"][0].startswith("Our friends won't buy")
    ner = read_columns(get_task("conll2003"), DATA, "train")
    spec = get_task("conll2003")
    assert spec.labels[ner["tags"][0][0]] == "B-ORG" and ner["tokens"][0][0] == "EU"


def test_splits_are_datasets():
    import datasets

    ds = load_split(get_task("rte"), DATA, "dev")
    assert isinstance(ds, datasets.Dataset) and len(ds) == 277
    assert set(ds.column_names) >= {"text", "text_pair", "label", "idx"}


def _write(tmp_path: Path, task_sub: str, name: str, text: str) -> Path:
    d = tmp_path / task_sub
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_wrong_column_count_names_file_and_line(tmp_path):
    root = _write(tmp_path, "glue/SST-2", "train.tsv", "sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n")
    with pytest.raises(DataError, match=r"train.tsv:3: expected 2 tab-separated columns"):
        read_columns(get_task("sst2"), root, "train")


def test_label_outside_set(tmp_path):
    root = _write(tmp_path, "glue/SST-2", "train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t2\n")
    with pytest.raises(DataError, match=r"train.tsv:3: label '2' is not one of 0, 1"):
        read_columns(get_task("sst2"), root, "train")


def test_non_numeric_and_out_of_range_score(tmp_path):
    head = "\t".join(["index", "genre", "filename", "year", "old_index", "source1", "source2",
                      "sentence1", "sentence2", "score"]) + "\n"
    row = "0\tg\tf\ty\t1\ts\ts\tA man.\tA woman.\t{}\n"
    root = _write(tmp_path, "glue/STS-B", "train.tsv", head + row.format("2.5") + row.format("high"))
    with pytest.raises(DataError, match=r"train.tsv:3: score 'high' is not a number"):
        read_columns(get_task("stsb"), root, "train")
    root = _write(tmp_path, "glue/STS-B", "train.tsv", head + row.format("7.0"))
    with pytest.raises(DataError, match=r"train.tsv:2: score '7.0' outside"):
        read_columns(get_task("stsb"), root, "train")


def test_empty_split(tmp_path):
    root = _write(tmp_path, "glue/SST-2", "train.tsv", "sentence\tlabel\n")
    with pytest.raises(DataError, match="split is empty"):
        read_columns(get_task("sst2"), root, "train")


def test_missing_root_and_file(tmp_path, monkeypatch):
    with pytest.raises(NaskdError, match="--data-dir DIR or set NASKD_DATA_DIR"):
        read_columns(get_task("sst2"), None, "train")
    with pytest.raises(NaskdError, match="does not exist"):
        read_columns(get_task("sst2"), tmp_path / "nope", "train")
    with pytest.raises(NaskdError, match=r"expected .*glue/SST-2/train.tsv"):
        read_columns(get_task("sst2"), tmp_path, "train")
    monkeypatch.setenv("NASKD_DATA_DIR", str(DATA))
    assert len(read_columns(get_task("rte"), None, "dev")["idx"]) == 277


def test_missing_dev_file(tmp_path):
    root = _write(tmp_path, "glue/SST-2", "train.tsv", "sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r"dev.tsv does not exist"):
        read_columns(get_task("sst2"), root, "dev")


def test_task_directory_given_directly():
    cols = read_columns(get_task("rte"), DATA / "glue" / "RTE", "dev")
    assert len(cols["idx"]) == 277


def test_unknown_task_lists_known():
    with pytest.raises(NaskdError, match="known tasks: .*sst2"):
        get_task("sst3")
    assert {"sst2", "cola", "mrpc", "rte", "stsb", "conll2000", "conll2003"} <= set(task_names())


def test_conll_bad_inputs(tmp_path):
    spec = get_task("conll2003")
    root = _write(tmp_path, "conll2003", "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    with pytest.raises(DataError, match=r"train.txt:2: expected 4 space-separated columns, found 3"):
        read_columns(spec, root, "train")
    root = _write(tmp_path, "conll2003", "train.txt", "EU NNP B-NP B-FOO\n")
    with pytest.raises(DataError, match=r"train.txt:1: tag 'B-FOO' is not in the conll2003 tag set"):
        read_columns(spec, root, "train")
    root = _write(tmp_path, "conll2003", "train.txt", "EU NNP B-NP O\nrejects VBZ B-VP I-ORG\n")
    with pytest.raises(DataError, match=r"train.txt:2: tag I-ORG cannot follow O"):
        read_columns(spec, root, "train")


def test_conll_empty_blocks_warn(tmp_path):
    spec = get_task("conll2003")
    root = _write(tmp_path, "conll2003", "train.txt", "EU NNP B-NP B-ORG\n\n\n\nGerman JJ B-NP B-MISC\n")
    with pytest.warns(UserWarning, match=r"1 empty sentence block.*train.txt:3"):
        cols = read_columns(spec, root, "train")
    assert cols["tokens"] == [["EU"], ["German"]] and cols["line"] == [1, 5]


def test_subsample_seeded():
    a, b = subsample(1000, 100, 3), subsample(1000, 100, 3)
    assert (a == b).all() and len(set(a.tolist())) == 100
    assert not (subsample(1000, 100, 4) == a).all()
    assert len(subsample(10, None, 0)) == 10
    assert set(subsample(1000, 50, 3)) <= set(a.tolist())          # smaller subsamples nest in larger ones
