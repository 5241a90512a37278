"""Dev predictions kept after the runs are gone (naskd.evidence; benchmarks/ commits them because runs/ is not
kept between sessions): a study's tables are recomputed from them, equal to the tables computed from the runs
themselves. The studies run as a user runs them: `python benchmarks/run.py STUDY.yaml --set ...` in a
subprocess, their tables written to a temporary NASKD_RESULTS_DIR."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from naskd.errors import NaskdError
from naskd.evidence import PredictionStore

from .conftest import DATA

ROOT = Path(__file__).resolve().parents[1]


def run_study(tmp_path, kind: str, args: dict, *sets: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A study of ``kind`` with ``args``, its tables and dev predictions under ``tmp_path / "results"`` (``env``:
    more environment variables)."""
    cfg = tmp_path / f"{kind}.yaml"
    cfg.write_text(yaml.safe_dump({"kind": kind, "tables": [], "args": args}))
    env = {**os.environ, **(env or {}), "NASKD_RESULTS_DIR": str(tmp_path / "results")}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), str(cfg),
                           *[x for s in sets for x in ("--set", s)]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def finished(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr[-2000:]


def fake_run(d: Path, logits: np.ndarray, acc: float, **cfg) -> None:
    d.mkdir(parents=True)
    np.save(d / "dev_logits.npy", logits)
    (d / "metrics.json").write_text(json.dumps({"status": "finished", "dev": {"accuracy": acc, "epoch": 2},
                                                "parameters_without_embeddings": 123, "train_seconds": 60.0,
                                                "description": "fake", "history": [{"epoch": 0}]}))
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_record_then_read_without_the_run(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 2))
    run = tmp_path / "runs" / "random-0-x"
    fake_run(run, logits, 0.5, min_params=99, sample_seed=0, truncate_k=3, lr=0.1)
    store = tmp_path / "predictions.json"
    ev = PredictionStore(store)
    assert ev.metrics(run)["dev"]["accuracy"] == 0.5 and not ev.from_store(run)
    ev.record(run, ev.labels(run, 7), metrics=ev.metrics(run), teacher_labels=np.zeros(7, int))
    ev.save()
    shutil.rmtree(run)
    ev2 = PredictionStore(store)                 # read back from the file
    assert ev2.from_store(run)
    assert np.array_equal(ev2.labels(run, 7), logits.argmax(-1))
    m = ev2.metrics(run)
    assert m["status"] == "finished" and m["dev"] == {"accuracy": 0.5, "epoch": 2}
    assert m["config"] == {"min_params": 99, "sample_seed": 0, "truncate_k": 3} and "history" not in m
    assert ev2.teacher_differs(run, np.ones(7, int)) and not ev2.teacher_differs(run, np.zeros(7, int))
    with pytest.raises(NaskdError, match="dev has 8"):
        ev2.labels(run, 8)
    with pytest.raises(NaskdError, match="no finished run there and no record"):
        ev2.labels(tmp_path / "runs" / "never-trained", 7)


def test_unfinished_run_is_not_read(tmp_path):
    run = tmp_path / "runs" / "bilstm-x"
    fake_run(run, np.zeros((3, 2)), 0.1)
    (run / "metrics.json").write_text(json.dumps({"status": "running"}))
    ev = PredictionStore(tmp_path / "predictions.json")
    assert ev.metrics(run) is None
    with pytest.raises(NaskdError):
        ev.labels(run, 3)


def test_seed_spread_table_is_the_same_from_the_record(tmp_path):
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task

    gold = np.asarray(read_columns(get_task("sst2"), str(DATA), "dev")["label"])
    rng = np.random.default_rng(1)

    def logits_with(acc: float) -> np.ndarray:
        right = rng.random(len(gold)) < acc
        lab = np.where(right, gold, 1 - gold)
        return np.eye(2)[lab] + rng.normal(scale=0.01, size=(len(gold), 2))

    runs = tmp_path / "runs"
    fake_run(runs / "sst2-teacher", logits_with(0.9), 0.9)
    fake_run(runs / "searched-t", logits_with(0.85), 0.85)
    fake_run(runs / "searched-t-s1", logits_with(0.86), 0.86)
    fake_run(runs / "bilstm-150-200-t", logits_with(0.8), 0.8)
    args = {"tag": "t", "seeds": [0, 1], "runs": str(runs), "teacher": str(runs / "sst2-teacher"),
            "baselines": ["bilstm-150-200", "random-0"], "data_dir": str(DATA)}
    finished(run_study(tmp_path, "seed_spread", args))
    results = tmp_path / "results"
    first = json.loads((results / "seed_spread_sst2_t.json").read_text())
    assert "Not finished: baseline random-0" in first["notes"] and "committed" not in first["notes"]
    record = json.loads((results / "dev_predictions_sst2.json").read_text())["runs"]
    assert set(record) == {"sst2-teacher", "searched-t", "searched-t-s1", "bilstm-150-200-t"}

    for name in ("searched-t", "searched-t-s1", "bilstm-150-200-t", "sst2-teacher"):
        shutil.rmtree(runs / name)
    finished(run_study(tmp_path, "seed_spread", args))
    second = json.loads((results / "seed_spread_sst2_t.json").read_text())
    assert second["rows"] == first["rows"]       # accuracies, best epochs, bootstrap intervals, verdicts
    assert "committed dev predictions" in second["notes"] and "searched-t-s1" in second["notes"]
    assert "teacher run whose dev predictions differ" not in second["notes"]


def test_students_table_is_the_same_from_the_record(tmp_path):
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task

    gold = np.asarray(read_columns(get_task("sst2"), str(DATA), "dev")["label"])
    rng = np.random.default_rng(2)

    def logits_with(acc: float) -> np.ndarray:
        lab = np.where(rng.random(len(gold)) < acc, gold, 1 - gold)
        return np.eye(2)[lab]

    runs, tag = tmp_path / "runs", "allx1"
    fake_run(runs / "sst2-teacher", logits_with(0.9), 0.9)
    fake_run(runs / f"searched-no-such-search-{tag}", logits_with(0.85), 0.85)
    fake_run(runs / f"bilstm-150-200-{tag}", logits_with(0.8), 0.8)
    fake_run(runs / f"bilstm-300-400-{tag}", logits_with(0.82), 0.82)
    for s in range(2):
        fake_run(runs / f"random-{s}-{tag}", logits_with(0.84), 0.84, min_params=123, sample_seed=s)
    args = {"max_train_examples": 0, "epochs": 1, "random": 3, "finished_only": True,
            "search": str(tmp_path / "no-such-search"), "runs": str(runs), "teacher": str(runs / "sst2-teacher"),
            "data_dir": str(DATA)}
    finished(run_study(tmp_path, "students_sst2", args))
    name = f"students_sst2_{tag}_no-such-search.json"
    first = json.loads((tmp_path / "results" / name).read_text())
    assert [r["student"] for r in first["rows"]] == ["teacher", "searched", "bilstm_soft 300/400 (best on dev)",
                                                     "random 0", "random 1"]
    assert "truncated_teacher k=3, random 2" in first["notes"] and "at least the searched student's 123" in first["notes"]
    shutil.rmtree(runs)
    finished(run_study(tmp_path, "students_sst2", args))
    second = json.loads((tmp_path / "results" / name).read_text())
    assert second["rows"] == first["rows"]
    assert "committed dev predictions" in second["notes"] and "random-1-allx1" in second["notes"]
    r = run_study(tmp_path, "students_sst2", args, "bench=true")
    assert r.returncode != 0 and "exist only as committed predictions" in r.stderr.strip().splitlines()[-1]


def test_teacher_study_makes_every_teacher_kind_and_rebuilds_its_table_from_the_record(tmp_path):
    """Issue 23's study on the tiny BERT: recipe seeds, their ensemble (its dev accuracy is that of the members'
    mean logits, computed here), a tuning study's recipe, a born-again teacher with and without augmentation;
    the table again from the committed predictions once the teacher runs are gone."""
    from naskd.data.readers import read_columns
    from naskd.data.tasks import get_task

    from .conftest import TINY_BERT

    runs = tmp_path / "runs"
    args = {"runs": str(runs), "teacher": str(TINY_BERT), "seeds": [1, 2], "tune_trials": 2,
            "tune_max_train_examples": 64, "tune_selection_examples": 16, "tuned_seeds": [1], "augment_rows": 32,
            "max_train_examples": 64, "epochs": 1, "table": "teachers_t", "data_dir": str(DATA)}
    finished(run_study(tmp_path, "teacher_study", args))
    results = tmp_path / "results"
    first = json.loads((results / "teachers_t.json").read_text())
    names = [r["teacher"] for r in first["rows"]]
    assert names == ["default recipe, seed 1", "default recipe, seed 2", "ensemble of the 2 above",
                     "tuned recipe, seed 1", "born-again (self-distilled)", "born-again on 32 rows + their augmentation"]
    gold = np.asarray(read_columns(get_task("sst2"), str(DATA), "dev")["label"])
    members = [np.load(runs / f"teacher-default-s{s}" / "dev_logits.npy") for s in (1, 2)]
    assert first["rows"][2]["dev accuracy"] == pytest.approx(float((np.mean(members, 0).argmax(-1) == gold).mean()))
    assert first["rows"][2]["forward passes per sentence"] == 2
    tune = json.loads((runs / "tune" / "tune.json").read_text())
    assert tune["chosen_on"] == "selection split" and len(tune["trials"]) == 2
    best = next(t for t in tune["trials"] if t["number"] == tune["best_trial"])
    tuned = yaml.safe_load((runs / "teacher-tuned-s1" / "config.yaml").read_text())
    assert tuned["lr"] == pytest.approx(best["params"]["lr"]) and tuned["max_train_examples"] == 64
    trials = json.loads((results / "teachers_t_tune.json").read_text())["rows"]
    assert [t["trial"] for t in trials] == [0, 1] and all("dev accuracy" in t for t in trials)
    born = yaml.safe_load((runs / "teacher-born-again-aug32" / "config.yaml").read_text())
    assert born["distill_from"] == str(runs / "teacher-default-s1")
    assert born["augmented"] == str(runs / "teacher-augment-32")

    for d in runs.glob("teacher-*"):
        if d.name != "teacher-augment-32":
            shutil.rmtree(d)
    finished(run_study(tmp_path, "teacher_study", args, "only=report"))
    second = json.loads((results / "teachers_t.json").read_text())
    assert second["rows"] == first["rows"]
