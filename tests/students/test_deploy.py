"""evaluate, export and bench on real (tiny) students and teachers."""
import json

import numpy as np
import pytest
import torch

from naskd.cli import main
from naskd.errors import NaskdError
from naskd.export import example_inputs, input_names
from naskd.modeldir import load_model

from ..conftest import DATA
from .test_retrain import GENOTYPE


@pytest.fixture(scope="module")
def student(tiny_teacher, tmp_path_factory):
    teacher, _ = tiny_teacher
    d = tmp_path_factory.mktemp("student")
    (d / "genotype.json").write_text(json.dumps(GENOTYPE))
    assert main(["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(d / "genotype.json"),
                 "--data-dir", str(DATA), "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs",
                 "1", "--batch-size", "8", "--out", str(d / "run"), "--checkpoint-every", "0"]) == 0
    return d / "run" / "student"


def _dev_lines(n):
    return (DATA / "glue/SST-2/dev.tsv").read_text().splitlines()[: n + 1]


def test_evaluate_split_and_every_file_format(student, tmp_path, capsys):
    assert main(["evaluate", "--model", str(student), "--data-dir", str(DATA), "--out", str(tmp_path / "e0")]) == 0
    m0 = json.loads((tmp_path / "e0/metrics.json").read_text())
    assert m0["examples"] == 872 and 0 <= m0["metrics"]["accuracy"] <= 1
    preds = [json.loads(x) for x in (tmp_path / "e0/predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 872 and preds[0]["line"] == 2 and preds[0]["pred"] in ("0", "1")
    acc = np.mean([p["gold"] == p["pred"] for p in preds])
    assert acc == pytest.approx(m0["metrics"]["accuracy"])
    lines = _dev_lines(40)
    with_header = tmp_path / "h.tsv"
    with_header.write_text("\n".join(lines) + "\n")
    no_header = tmp_path / "n.tsv"
    no_header.write_text("\n".join(lines[1:]) + "\n")
    label_text = tmp_path / "s.txt"
    label_text.write_text("\n".join(f"{ln.split(chr(9))[1]} {ln.split(chr(9))[0]}" for ln in lines[1:]) + "\n")
    got = []
    for i, f in enumerate([with_header, no_header, label_text]):
        assert main(["evaluate", "--model", str(student), "--file", str(f), "--out", str(tmp_path / f"e{i + 1}")]) == 0
        m = json.loads((tmp_path / f"e{i + 1}/metrics.json").read_text())
        assert m["examples"] == 40
        got.append(m["metrics"]["accuracy"])
    assert got[0] == got[1] == got[2]
    assert "(glue)" in json.loads((tmp_path / "e2/metrics.json").read_text())["source"]
    assert "(label_text)" in json.loads((tmp_path / "e3/metrics.json").read_text())["source"]
    # the first 40 dev rows scored within the split run agree with the file runs
    assert np.mean([p["gold"] == p["pred"] for p in preds[:40]]) == pytest.approx(got[0])


def test_evaluate_bad_files(student, tiny_teacher, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\na fine film\t1\nthree\tcolumns\there\n")
    assert main(["evaluate", "--model", str(student), "--file", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert f"{bad}:3: expected 2 tab-separated columns" in capsys.readouterr().err
    bad.write_text("1 good\n7 what\n")
    assert main(["evaluate", "--model", str(student), "--file", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert f"{bad}:2: label '7' is not one of 0, 1" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path), "--out", str(tmp_path / "z")]) == 2
    assert "neither a student directory" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(student), "--task", "rte", "--data-dir", str(DATA),
                 "--out", str(tmp_path / "w")]) == 2
    assert "was trained for sst2, not rte" in capsys.readouterr().err
    teacher, _ = tiny_teacher
    assert main(["evaluate", "--model", str(teacher), "--data-dir", str(DATA), "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t/metrics.json").read_text())["role"] == "teacher"


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_onnx_and_torchscript_match_pytorch(student, tiny_teacher, tmp_path, which):
    import onnxruntime as ort

    path = student if which == "student" else tiny_teacher[0]
    assert main(["export", "--model", str(path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 0
    assert main(["export", "--model", str(path), "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    assert main(["export", "--model", str(path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    loaded = load_model(path)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ts = torch.jit.load(str(tmp_path / "m.pt"))
    names = input_names(loaded)
    for batch, length in [(1, 3), (5, 17), (64, 40)]:          # other shapes than the traced one
        ex = example_inputs(loaded, batch, length)
        with torch.no_grad():
            want = loaded.model(**ex)["logits"].numpy()
            got_ts = ts(*[ex[n] for n in names]).numpy()
        got = sess.run(None, {n: ex[n].numpy() for n in names})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4
        assert np.abs(got_ts - want).max() < 1e-4


def test_bench_table_and_ratios(student, tiny_teacher, tmp_path, capsys, monkeypatch):
    teacher, _ = tiny_teacher
    loads = iter([None, (1.4, 2)])          # quiet when the timing starts, busy when it ends
    monkeypatch.setattr("naskd.bench.busy_cores", lambda threads: next(loads))
    assert main(["bench", "--model", str(teacher), "--model", str(student), "--data-dir", str(DATA),
                 "--latency-examples", "20", "--repeat", "1", "--threads", "2", "--out", str(tmp_path / "b")]) == 0
    assert torch.get_num_threads() == 1          # the caller's thread setting is given back
    res = json.loads((tmp_path / "b/bench.json").read_text())
    t, s = res["rows"]
    # with 2 threads, batch 1 is also timed with one (one request per core), ratios against the teacher's
    for eng in ("torch", "onnx"):
        assert s[f"{eng} x faster b1 1 thread"] == pytest.approx(t[f"{eng} b1 ms 1 thread"] / s[f"{eng} b1 ms 1 thread"])
        assert t[f"{eng} x faster b1 1 thread"] == 1.0
        best = min(t[f"{eng} b1 ms"], t[f"{eng} b1 ms 1 thread"]) / min(s[f"{eng} b1 ms"], s[f"{eng} b1 ms 1 thread"])
        assert s[f"{eng} x faster b1 best threads"] == pytest.approx(best)
    assert t["role"] == "teacher" and s["role"] == "student"
    assert t["torch x throughput"] == 1.0 and t["x fewer params (no emb)"] == 1.0
    assert s["x fewer params (no emb)"] == pytest.approx(t["params without embeddings"] / s["params without embeddings"])
    assert s["torch x throughput"] == pytest.approx(s["torch b128 ex/s"] / t["torch b128 ex/s"])
    assert s["onnx max abs diff"] < 1e-4 and t["onnx max abs diff"] < 1e-4
    assert s["dev accuracy"] == s["dev metrics"]["accuracy"] and s["latency examples"] == 20
    printed = capsys.readouterr()
    assert "| model |" in (tmp_path / "b/bench.md").read_text() and "| model |" in printed.out
    # a machine busy during the timing is said on stderr and in the note kept with the table
    assert "the machine was busy while timing (other processes used 1.4 of its 2 cores" in printed.err
    assert res["busy"] is True and "WARNING: the machine was busy" in res["note"]
    assert "WARNING: the machine was busy" in (tmp_path / "b/bench.md").read_text()
    with pytest.raises(NaskdError):
        load_model(tmp_path / "nothing")


def test_ratios_with_one_thread_and_each_model_at_its_best_thread_count():
    from naskd.bench import add_ratios

    def row(name, role, b1, b1_one, b128):
        r = {"model": name, "role": role, "task": "sst2", "params without embeddings": 10, "torch b1 ms": b1,
             "torch b128 ex/s": b128}
        if b1_one is not None:
            r["torch b1 ms 1 thread"] = b1_one
        return r

    # two threads: the teacher is fastest with both, the student with one
    rows = [row("t", "teacher", 6.0, 9.0, 100.0), row("s", "student", 4.0, 3.0, 500.0)]
    add_ratios(rows)
    s = rows[1]
    assert s["torch x faster b1"] == pytest.approx(1.5) and s["torch x faster b1 1 thread"] == pytest.approx(3.0)
    assert s["torch x faster b1 best threads"] == pytest.approx(2.0)
    assert s["torch x throughput"] == pytest.approx(5.0)
    # one thread only (--threads 1): no one-thread columns, the throughput ratio is still there
    rows = [row("t", "teacher", 6.0, None, 100.0), row("s", "student", 4.0, None, 300.0)]
    add_ratios(rows)
    assert rows[1]["torch x throughput"] == pytest.approx(3.0) and "torch x faster b1 best threads" not in rows[1]


def test_bench_models_take_turns_block_by_block_and_pass_by_pass():
    """Blocks of dev sentences are run by every model (after one untimed call) before the next block, the
    first model rotating; throughput passes likewise; the medians land in each model's row."""
    import time as _time

    from naskd.bench import _Subject, time_interleaved

    calls = []

    def subject(name, n, pause):
        def run(b):
            calls.append((name, b["i"]))
            if pause:
                _time.sleep(pause)
        sub = _Subject({"model": name, "dev examples": 2 * n}, [{"i": i} for i in range(n)],
                       [{"i": "big0"}, {"i": "big1"}])
        sub.latency["torch b1 ms"] = (run, 1)
        sub.throughput["torch b128 ex/s"] = run
        return sub

    a, b = subject("a", 7, 0.0), subject("b", 4, 0.003)
    time_interleaved([a, b], repeat=3, threads=1, block=3)
    timed = [c for c in calls if isinstance(c[1], int)][9:]          # after the warm-up: 5 of a's, b's 4
    assert timed == [("a", 0), ("a", 0), ("a", 1), ("a", 2),          # block 0: a first (one untimed call)
                     ("b", 0), ("b", 0), ("b", 1), ("b", 2),
                     ("b", 3), ("b", 3),                              # block 1: b first; b has 4 sentences
                     ("a", 3), ("a", 3), ("a", 4), ("a", 5),
                     ("a", 6), ("a", 6)]                              # block 2: a alone
    passes = [c[0] for c in calls if c[1] == "big1"]
    assert passes == ["a", "b", "b", "a", "a", "b"]                   # one pass each, turns rotating
    assert b.row["torch b1 ms"] >= 3.0 > a.row["torch b1 ms"]
    assert a.row["torch b128 ex/s"] > b.row["torch b128 ex/s"] > 0


def test_export_bad_models_and_destinations(student, tmp_path, capsys):
    """Issue 19, kind 6: `naskd export` to a destination it cannot write, or of a --model that is a file, ends in
    one line (exit 2) before the model is loaded or anything is written."""
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--model", str(student / "model.safetensors"), "-o", str(tmp_path / "a.onnx")],
         f"--model {student / 'model.safetensors'} is a file; pass the directory that holds it"),
        (["--model", str(tmp_path / "nowhere"), "-o", str(tmp_path / "a.onnx")], "does not exist"),
        (["--model", str(student), "-o", str(tmp_path)], f"{tmp_path} is a directory; name a file to write with -o"),
        (["--model", str(student), "-o", str(tmp_path), "--overwrite"], "is a directory"),
        (["--model", str(student), "-o", str(tmp_path / "afile" / "m.onnx")], "afile is a file, not a folder"),
        (["--model", str(student), "-o", "/proc/naskd-test.onnx"], "cannot write /proc/naskd-test.onnx"),
        (["--model", str(student), "-o", str(tmp_path / "afile")], "afile already exists; pass --overwrite"),
    ]
    for args, expect in cases:
        assert main(["export", "--format", "onnx", *args]) == 2, args
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("naskd export: error: ") and "Traceback" not in err, err
        assert expect in lines[0], (args, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "x"
