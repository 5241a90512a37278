"""Every strategy end to end on tiny spaces: outputs, resume to the same result, the Pareto front and its
pick, derive from the front, retraining a pick, and the bad inputs of `naskd search --strategy ...`."""
import json

import numpy as np
import pytest
import yaml

from naskd.cli import main
from naskd.errors import NaskdError
from naskd.search import pareto as P
from naskd.space.oneshot import load_genotype

from ..conftest import DATA

pytestmark = pytest.mark.usefixtures("shared_latency_table")   # one table for the module's searches

CELL = {"name": "tinycell", "ops": ["conv3", "identity", "attn4", "lstm", "none"],
        "aggregators": ["max_pool", "avg_pool"], "nodes": 2, "width": 16}
MACRO = {"kind": "macro", "name": "tinymacro", "embed": [8, 16], "depth": [1, 2],
         "ops": ["lstm", "conv3", "attn2"], "widths": [8, 16], "pooling": ["ends", "max", "mean"],
         "classifier": [8, 16]}


@pytest.fixture()
def spaces(tmp_path):
    out = {}
    for name, data in (("cell", CELL), ("macro", MACRO)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump(data))
        out[name] = f
    out["teacher"] = "teacher"            # search_spaces/teacher.yaml: k = 1..L of the tiny 2-layer teacher
    return out


def argv(teacher, space, out, strategy, *extra):
    return ["search", "--strategy", strategy, "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA),
            "--space", str(space), "--layers", "2", "--max-train-examples", "160", "--selection-examples", "48",
            "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "2", "--trials", "10",
            "--population", "4", "--candidates", "3", "--latency-threads", "1", "--out", str(out),
            "--checkpoint-every", "1000", *extra]


def candidates(run):
    return [(c["text"], c["score"], c["b128_ms"]) for c in json.loads((run / "pareto.json").read_text())["candidates"]]


@pytest.mark.parametrize("strategy,kind", [("spos", "cell"), ("spos", "macro"), ("spos", "teacher"),
                                           ("spos-sandwich", "macro"),
                                           ("random", "macro"), ("random", "cell"), ("random", "teacher"),
                                           ("hyperband", "macro"), ("gdas", "macro")])
def test_strategy_end_to_end_and_resume(tiny_teacher, spaces, tmp_path, strategy, kind):
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    hb = ("--rung-rows", "32", "--budget-rows", "1200") if strategy == "hyperband" else ()   # 8 rungs a candidate
    if strategy == "spos-sandwich":
        strategy, hb = "spos", ("--sampling", "sandwich")
    assert main(argv(teacher, spaces[kind], full, strategy, *hb)) == 0
    for f in ("pareto.json", "pareto.png", "genotype.json", "metrics.json", "config.yaml"):
        assert (full / f).is_file(), f
    doc = json.loads((full / "pareto.json").read_text())
    cands = doc["candidates"]
    assert len(cands) == (3 if strategy == "random" else len({c["text"] for c in cands}))
    if kind == "teacher":                 # k = 1 and 2 of the 2-layer teacher: the whole space is evaluated
        assert strategy == "random" or {c["genotype"]["k"] for c in cands} == {1, 2}
    for c in cands:
        assert 0.0 <= c["score"] <= 1.0 and c["b1_ms"] > 0 and c["b128_ms"] > 0
        assert c["params"] > c["params_without_embeddings"] > 0
        assert c["speedup"] == pytest.approx(doc["teacher"]["b128_ms"] / c["b128_ms"])
    # the front is exactly the non-dominated set (brute force) and the pick is the most accurate
    flags = [not any(o["score"] >= c["score"] and o["b128_ms"] <= c["b128_ms"] and
                     (o["score"] > c["score"] or o["b128_ms"] < c["b128_ms"]) for o in cands) for c in cands]
    assert [c["on_front"] for c in cands] == flags
    pick = next(c for c in cands if c["trial"] == doc["pick"])
    assert pick["score"] == max(c["score"] for c in cands)
    g = load_genotype(full / "genotype.json")
    assert g.to_dict() == pick["genotype"]
    if strategy == "hyperband":             # the budget ends it: within one candidate's rows past it
        m = json.loads((full / "metrics.json").read_text())
        recs = [json.loads(x) for x in (full / "candidates.jsonl").read_text().splitlines()]
        assert m["rows_trained"] == sum(r.get("rows", 0) for r in recs)
        assert 1200 <= m["rows_trained"] < 1200 + 2 * 112 or m["trials"] == 10
        assert m["completed"] == len(cands) and m["pruned"] == sum(r["state"] == "pruned" for r in recs)
        assert all(len(r["values"]) == 8 for r in recs if r["state"] == "complete" and r["rows"])
    if strategy == "gdas":                  # the argmax first, then draws meeting the constraint, with their alpha score
        alphas = json.loads((full / "alphas.json").read_text())
        assert [a["epoch"] for a in alphas] == [1, 2]
        probs = alphas[-1]["probabilities"]
        assert all(sum(p.values()) == pytest.approx(1.0) for p in probs.values())
        assert any(max(p.values()) > 1 / len(p) + 1e-6 for p in probs.values())     # alpha moved off uniform
        recs = [json.loads(x) for x in (full / "candidates.jsonl").read_text().splitlines()]
        assert recs[0]["argmax"] and not any(r["argmax"] for r in recs[1:])
        assert all(r["alpha_logprob"] < 0 for r in recs)
        m = json.loads((full / "metrics.json").read_text())
        assert m["argmax_text"] == recs[0]["text"]
    # interrupted twice (once inside training), resumed: the same evaluated architectures, scores, pick
    steps = {"spos": "4", "gdas": "3"}.get(strategy, "7")
    assert main(argv(teacher, spaces[kind], part, strategy, *hb, "--stop-after-steps", steps)) == 0
    assert json.loads((part / "metrics.json").read_text())["status"] == "stopped"
    assert main(argv(teacher, spaces[kind], part, strategy, *hb, "--resume", "--stop-after-steps", steps)) == 0
    assert main(argv(teacher, spaces[kind], part, strategy, *hb, "--resume")) == 0
    assert candidates(part) == candidates(full)
    assert (part / "latency_scale.json").is_file()
    assert load_genotype(part / "genotype.json") == g


def test_spos_discrete_search_resumes_mid_way(tiny_teacher, spaces, tmp_path):
    """A kill during the discrete search: the recorded evaluations are replayed, the rest evaluated."""
    teacher, _ = tiny_teacher
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(argv(teacher, spaces["cell"], full, "spos")) == 0
    assert main(argv(teacher, spaces["cell"], part, "spos", "--trials", "4")) == 0
    lines = (part / "candidates.jsonl").read_text().splitlines()
    (part / "candidates.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])   # cut mid-line
    assert main(argv(teacher, spaces["cell"], part, "spos", "--resume")) == 0
    assert candidates(part) == candidates(full)


def test_spos_under_a_constraint_and_derive_from_the_front(tiny_teacher, spaces, tmp_path, capsys, monkeypatch):
    teacher, _ = tiny_teacher
    from naskd.search import lut

    monkeypatch.setattr(lut, "machine_threads", lambda cores=None: lut.THREADS)   # the pick at 1 and 2 threads
    out = tmp_path / "s"
    assert main(argv(teacher, spaces["macro"], out, "spos", "--speedup", "1.5")) == 0
    doc = json.loads((out / "pareto.json").read_text())
    pick = next(c for c in doc["candidates"] if c["trial"] == doc["pick"])
    assert set(pick["latency"]) == {"threads_1", "threads_2"}
    assert all(r["measured_b128_ms"] > 0 and r["predicted_b128_ms"] > 0 for r in pick["latency"].values())
    assert pick["speedup"] >= 1.5
    assert pick["score"] == max(c["score"] for c in doc["candidates"] if c["speedup"] >= 1.5)
    assert "measured_b1_ms" in pick and "measured_b128_ms" in pick
    # picked again without searching: the most accurate at least S times the teacher's throughput
    s = sorted(c["speedup"] for c in doc["candidates"])[len(doc["candidates"]) // 2]
    assert main(["derive", str(out), "--speedup", str(s), "-o", str(tmp_path / "g.json")]) == 0
    g = load_genotype(tmp_path / "g.json")
    want = max((c for c in doc["candidates"] if c["speedup"] >= s), key=lambda c: (c["score"], -c["b128_ms"]))
    assert g.to_dict() == want["genotype"]
    # a constraint no evaluated architecture meets: one line naming the fastest
    top = max(c["speedup"] for c in doc["candidates"])
    capsys.readouterr()
    assert main(["derive", str(out), "--speedup", str(top * 2), "-o", str(tmp_path / "h.json")]) == 2
    err = capsys.readouterr().err
    assert "no evaluated architecture meets" in err and f"{top:.2f}x" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "h.json").exists()
    # the pick retrains, and the student loads like any other
    assert main(["retrain", "--genotype", str(out / "genotype.json"), "--teacher", str(teacher), "--data-dir",
                 str(DATA), "--max-train-examples", "32", "--max-eval-examples", "16", "--epochs", "2",
                 "--keep", "last", "--out", str(tmp_path / "rt")]) == 0
    m = json.loads((tmp_path / "rt" / "metrics.json").read_text())     # the last epoch reported, not dev's best
    assert m["keep"] == "last" and m["best_epoch"] == 2 and m["dev"] == m["history"][-1]
    from naskd.students.io import load_student

    model, _, info = load_student(tmp_path / "rt" / "student")
    assert info["architecture"] == "macro" and info["kd"] == "logit_mse"


def test_macro_space_holds_bilstm_soft_as_a_baseline_point(tiny_teacher, tmp_path):
    from naskd.space.oneshot import load_oneshot_space

    space = load_oneshot_space("macro")
    base = space.baselines()
    assert list(base) == ["bilstm_soft"] and space.contains(base["bilstm_soft"])


@pytest.mark.parametrize("extra,message", [
    (["--strategy", "evolution"], "unknown search strategy 'evolution'; known: darts"),
    (["--strategy", "darts", "--space", "macro"], "--strategy darts searches cell spaces; macro is a macro space"),
    (["--strategy", "spos", "--per-cell-alphas"], "--per-cell-alphas is a darts setting"),
    (["--strategy", "darts", "--latency-ms", "3"], "darts has no latency term"),
    (["--strategy", "spos", "--speedup", "2", "--latency-ms", "3"], "not both"),
    (["--strategy", "darts", "--speedup", "2"], "darts has no latency term"),
    (["--strategy", "gdas"], "--strategy gdas searches macro spaces; "),
    (["--strategy", "gdas", "--space", "macro", "--order", "2"], "--order 2 is a darts setting"),
    (["--strategy", "spos", "--space", "macro", "--kd", "soft_ce=0.5,pkd=1"], "depth and width of the macro"),
    (["--strategy", "spos", "--space", "teacher", "--layers", "6", "--kd", "pkd=1"], "depth and width of the teacher"),
    (["--strategy", "spos", "--selection-examples", "5000"], "would leave fewer rows to train on"),
    (["--strategy", "darts", "--selection-from", "sentences"], "--selection-from is a setting of the strategies"),
    (["--strategy", "spos", "--speedup", "1000000"], "no architecture of the tinycell space meets at least 1e+06x"),
    (["--strategy", "spos", "--sampling", "sandwich"], "--sampling sandwich needs sized dimensions"),
    (["--strategy", "random", "--space", "macro", "--sampling", "fair"], "--sampling fair is a spos setting"),
    (["--strategy", "gdas", "--space", "macro", "--sampling", "sandwich"], "--strategy gdas does not use it"),
])
def test_bad_inputs_fail_before_training(tiny_teacher, spaces, tmp_path, capsys, extra, message):
    teacher, _ = tiny_teacher
    out = tmp_path / "bad"
    args = argv(teacher, spaces["cell"], out, "spos")
    i = args.index("--strategy")
    del args[i:i + 2]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err, err
    # one error line (progress bars of the latency table's measurements may come before it)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "error" in ln]
    assert len(lines) == 1 and lines[0].startswith("naskd search: error:") and "Traceback" not in err
    assert not out.exists()


def test_sandwich_on_a_macro_space_sized_nowhere_is_refused(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({**MACRO, "name": "flat", "embed": [8], "depth": [2], "widths": [8],
                                    "classifier": [8]}))
    out = tmp_path / "bad"
    assert main(argv(teacher, flat, out, "spos", "--sampling", "sandwich")) == 2
    err = capsys.readouterr().err
    assert "search space flat has no sized dimension" in err and "Traceback" not in err
    assert not out.exists()


def test_corrupt_front_and_foreign_genotypes_are_refused(tiny_teacher, spaces, tmp_path, capsys):
    teacher, _ = tiny_teacher
    out = tmp_path / "s"
    assert main(argv(teacher, spaces["teacher"], out, "spos")) == 0
    doc = json.loads((out / "pareto.json").read_text())
    for field, value in (("score", "high"), ("speedup", None), ("b1_ms", float("nan"))):
        bad = tmp_path / f"bad-{field}"
        bad.mkdir()
        broken = json.loads(json.dumps(doc))
        broken["candidates"][0][field] = value
        (bad / "pareto.json").write_text(json.dumps(broken))
        capsys.readouterr()
        assert main(["derive", str(bad), "--speedup", "1", "-o", str(tmp_path / "g.json")]) == 2
        err = capsys.readouterr().err
        assert f"candidate 0 has {field}" in err and len(err.strip().splitlines()) == 1
    # a teacher-space genotype of another teacher's depth: refused, naming both depths
    g = json.loads((out / "genotype.json").read_text())
    (tmp_path / "g12.json").write_text(json.dumps({**g, "teacher_layers": 12}))
    assert main(["retrain", "--genotype", str(tmp_path / "g12.json"), "--teacher", str(teacher), "--data-dir",
                 str(DATA), "--out", str(tmp_path / "rt")]) == 2
    err = capsys.readouterr().err
    assert "12-layer teacher" in err and "has 2" in err and not (tmp_path / "rt").exists()
    # a macro genotype (a sentence encoder) for a tagging task
    from naskd.space.macro import MacroGenotype

    MacroGenotype("macro", 300, (("lstm", 300),), "ends", 200).save(tmp_path / "m.json")
    assert main(["retrain", "--task", "conll2000", "--genotype", str(tmp_path / "m.json"), "--teacher", str(teacher),
                 "--data-dir", str(DATA), "--out", str(tmp_path / "rt")]) == 2
    assert "conll2000 is a tagging task" in capsys.readouterr().err and not (tmp_path / "rt").exists()
    # an unknown space kind: named, with the known ones
    f = tmp_path / "k.yaml"
    f.write_text(yaml.safe_dump({**MACRO, "kind": "macro2"}))
    assert main(argv(teacher, f, tmp_path / "o", "spos")) == 2
    assert "unknown space kind 'macro2'; known: cell, macro, teacher" in capsys.readouterr().err


def test_unbuildable_space_is_refused(tiny_teacher, tmp_path, capsys):
    teacher, _ = tiny_teacher
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({**MACRO, "ops": ["attn4"], "widths": [6]}))
    assert main(argv(teacher, f, tmp_path / "o", "spos")) == 2
    err = capsys.readouterr().err
    assert "attn4" in err and "6" in err and len(err.strip().splitlines()) == 1
    f.write_text(yaml.safe_dump({**MACRO, "depth": [0, 1]}))
    assert main(argv(teacher, f, tmp_path / "o", "spos")) == 2
    assert not (tmp_path / "o").exists()


def test_latency_table_of_another_machine_is_refused(tiny_teacher, spaces, tmp_path, capsys):
    from naskd.search.lut import LatencyLUT

    teacher, _ = tiny_teacher
    lut = LatencyLUT(entries={("x", 1, 1, 8): 1.0})
    lut.machine = {**lut.machine, "torch": "1.0.0"}
    lut.save(tmp_path / "lut.json")
    assert main(argv(teacher, spaces["cell"], tmp_path / "o", "spos", "--latency-table",
                     str(tmp_path / "lut.json"))) == 2
    err = capsys.readouterr().err
    assert "1.0.0" in err and "measure again" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_pareto_front_and_pick_by_brute_force():
    rng = np.random.default_rng(0)
    cands = [{"score": float(rng.integers(0, 5)) / 4, "b128_ms": float(rng.integers(1, 6)), "trial": i,
              "text": str(i)} for i in range(40)]
    for c in cands:
        c["b1_ms"] = c["b128_ms"] / 10
        c["speedup"] = 10.0 / c["b128_ms"]
    P.mark_front(cands)
    for c in cands:
        dominated = any(o["score"] >= c["score"] and o["b128_ms"] <= c["b128_ms"] and o is not c and
                        (o["score"] > c["score"] or o["b128_ms"] < c["b128_ms"]) for o in cands)
        assert c["on_front"] == (not dominated)
    for s in (1.0, 2.0, 2.5, 5.0):
        p = P.pick(cands, speedup=s)
        ok = [c for c in cands if c["speedup"] >= s]
        assert p["speedup"] >= s and p["score"] == max(c["score"] for c in ok)
        assert p["on_front"] or any(c["score"] == p["score"] and c["b128_ms"] < p["b128_ms"] for c in ok) is False
    with pytest.raises(NaskdError, match="fastest evaluated is 10.00x"):
        P.pick(cands, speedup=11.0)


def test_resume_with_more_epochs_scores_again(tiny_teacher, spaces, tmp_path):
    """Evaluations made with a supernet trained less are not replayed once --epochs is raised on resume."""
    teacher, _ = tiny_teacher
    out = tmp_path / "s"
    assert main(argv(teacher, spaces["cell"], out, "spos", "--epochs", "1")) == 0
    first = {json.loads(line)["supernet_steps"] for line in (out / "candidates.jsonl").read_text().splitlines()}
    assert main(argv(teacher, spaces["cell"], out, "spos", "--epochs", "2", "--resume")) == 0
    steps = json.loads((out / "metrics.json").read_text())["supernet_steps"]
    assert len(first) == 1 and steps == 2 * first.pop()
    doc = json.loads((out / "pareto.json").read_text())
    assert {c["supernet_steps"] for c in doc["candidates"]} == {steps}


def test_latency_scale_kept_for_a_resume(tmp_path):
    """The drift factors a search predicted with are read back by its resume; a damaged file is refused."""
    from types import SimpleNamespace

    from naskd.search.strategy.oneshot import Latency

    assert Latency.read_scale(tmp_path) is None and Latency.read_scale(None) is None
    lat = Latency.__new__(Latency)
    lat.lut = SimpleNamespace(scale={(1, 128): 0.9, (1, 1): 1.2})
    lat.save_scale(tmp_path)
    assert Latency.read_scale(tmp_path) == {(1, 128): 0.9, (1, 1): 1.2}
    (tmp_path / Latency.SCALE_FILE).write_text('{"scale": [[1, 128]]}')
    with pytest.raises(NaskdError, match="damaged"):
        Latency.read_scale(tmp_path)


def test_random_candidate_rows(tiny_teacher, spaces, tmp_path):
    """--candidate-rows sets each candidate's rows per epoch instead of the equal share."""
    teacher, _ = tiny_teacher
    out = tmp_path / "r"
    assert main(argv(teacher, spaces["macro"], out, "random", "--candidate-rows", "24")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["rows_per_candidate_epoch"] == 24
    steps = [json.loads(line)["steps"] for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert steps == [2 * 2] * 3                  # 24 rows in batches of 16: 2 batches per epoch, 2 epochs


def test_selection_of_whole_rows_keeps_their_phrases_out_of_training(tiny_teacher, spaces, tmp_path, capsys):
    """--selection-from sentences: the search selects on rows of its subsample that no SST-2 training row holds
    and trains on none of the subsample's rows inside them; the random carve warns on SST-2's phrases."""
    from naskd.data.readers import read_columns, subsample
    from naskd.data.selection import row_texts, search_selection
    from naskd.data.tasks import get_task

    teacher, _ = tiny_teacher
    args = argv(teacher, spaces["macro"], tmp_path / "s", "random", "--selection-from", "sentences")
    args[args.index("--max-train-examples") + 1] = "600"
    args[args.index("--selection-examples") + 1] = "20"
    assert main(args) == 0
    out = capsys.readouterr()
    assert "[random] selection split: 20 rows to select on" in out.out and "warning: " not in out.err
    m = json.loads((tmp_path / "s/metrics.json").read_text())
    assert m["selection_from"] == "sentences" and m["selection_rows"] == 20
    # the rows trained on: the subsample less the drawn rows and every subsample row inside one of them
    columns = read_columns(get_task("sst2"), DATA, "train")
    texts, keep = row_texts(columns), subsample(len(columns["text"]), 600, 0)
    carve = search_selection(columns, keep, 20, 0, "sentences")
    drawn = [f" {texts[i]} " for i in carve.selection]
    inside = [i for i in keep if i not in set(carve.selection.tolist()) and any(f" {texts[i]} " in d for d in drawn)]
    assert m["train_rows"] == 600 - 20 - len(inside) and len(inside) > 0
    # too few whole rows in a small subsample: refused before any work, with the ways out
    args[args.index("--max-train-examples") + 1] = "100"
    args[args.index("--out") + 1] = str(tmp_path / "few")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lie inside no other row (whole sentences) to select on among the 100 of the training subsample" in err
    assert not (tmp_path / "few").exists()
    # the random carve of SST-2's phrases: trained around, said once on stderr
    args = argv(teacher, spaces["macro"], tmp_path / "r", "random")
    args[args.index("--max-train-examples") + 1] = "3000"
    args[args.index("--selection-examples") + 1] = "200"
    assert main(args + ["--stop-after-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert sum("--selection-from sentences carves whole rows" in line for line in err.splitlines()) == 1
