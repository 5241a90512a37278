"""Candidate evaluation shared through an Optuna storage (issue 24 point 2): `naskd search --storage URL` and
`naskd worker RUN` on one SQLite file produce one front; a killed worker's candidate is failed as stale,
queued again by Optuna's retry callback and finished by another process; what each candidate scores does
not depend on which process evaluated it (equal to a one-process search's score of the same architecture)."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import yaml

from ..conftest import DATA
from .test_distributed_search import MACRO


def command(teacher, space, out, strategy, *extra):
    return [sys.executable, "-m", "naskd", "search", "--strategy", strategy, "--task", "sst2", "--teacher", str(teacher),
            "--data-dir", str(DATA), "--space", str(space), "--max-train-examples", "160", "--selection-examples",
            "48", "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "2", "--population", "8",
            "--latency-threads", "1", "--kd", "logit_mse", "--device", "cpu", "--out", str(out), *extra]


def env(cache):
    return {**os.environ, "OMP_NUM_THREADS": "1", "NASKD_CACHE_DIR": str(cache)}


def worker(run, cache):
    return subprocess.Popen([sys.executable, "-m", "naskd", "worker", str(run)], env=env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_worker_once_the_run_exists(run, cache, search):
    t0 = time.time()
    while not (run / "config.yaml").is_file():
        assert search.poll() is None, search.communicate()[1][-3000:]
        assert time.time() - t0 < 300, "the search never wrote its config.yaml"
        time.sleep(0.5)
    return worker(run, cache)


def study_trials(db, name):
    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=db).get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One teacher-output cache and latency table for the module's searches (measured once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def space(tmp_path):
    p = tmp_path / "macro.yaml"
    p.write_text(yaml.safe_dump(MACRO))
    return p


def scores(run) -> dict:
    return {c["text"]: c["score"] for c in json.loads((run / "pareto.json").read_text())["candidates"]}


def test_spos_search_and_a_worker_make_one_front(tiny_teacher, space, cache, tmp_path):
    teacher, _ = tiny_teacher
    run, db = tmp_path / "shared", f"sqlite:///{tmp_path}/search.db"
    search = subprocess.Popen(command(teacher, space, run, "spos", "--trials", "120", "--storage", db),
                              env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = start_worker_once_the_run_exists(run, cache, search)
    out, err = search.communicate(timeout=900)
    assert search.returncode == 0, err[-3000:]
    w_out, _ = w.communicate(timeout=300)
    assert w.returncode == 0, w_out[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["storage"] == db and m["study_name"].startswith("naskd-search-shared-")
    assert len(m["evaluated_by"]) == 2 and all(n > 0 for n in m["evaluated_by"].values()), (m["evaluated_by"], w_out)
    trials = study_trials(db, m["study_name"])
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 120
    # one front over every process's candidates: the search's pareto.json holds each distinct architecture once
    doc = json.loads((run / "pareto.json").read_text())
    texts = [c["text"] for c in doc["candidates"]]
    assert len(texts) == len(set(texts)) == len({json.dumps(t.user_attrs["candidate"]["genotype"], sort_keys=True)
                                                 for t in complete})
    assert doc["pick"] in {c["trial"] for c in doc["candidates"] if c["on_front"]}
    # the worker scored with the supernet the search trained: the same architecture scores the same in a
    # one-process search of the same settings
    one = tmp_path / "one"
    r = subprocess.run(command(teacher, space, one, "spos", "--trials", "120"), env=env(cache), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ref, got = scores(one), scores(run)
    theirs = {c["text"] for c in doc["candidates"] if c["worker"].endswith(f":{w.pid}")}
    common = set(ref) & theirs
    assert common, "no architecture the worker scored is in the one-process search"
    assert all(ref[t] == got[t] for t in common), {t: (ref[t], got[t]) for t in common if ref[t] != got[t]}


def test_a_killed_workers_candidate_is_retried_and_scores_as_in_one_process(tiny_teacher, space, cache, tmp_path):
    teacher, _ = tiny_teacher
    run, db = tmp_path / "shared", f"sqlite:///{tmp_path}/search.db"
    extra = ("--candidates", "4", "--epochs", "8", "--checkpoint-every", "2")
    search = subprocess.Popen(command(teacher, space, run, "random", *extra, "--storage", db, "--heartbeat", "1"),
                              env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = start_worker_once_the_run_exists(run, cache, search)
    name = yaml.safe_load((run / "config.yaml").read_text())["study_name"]
    killed, stopped, t0 = None, False, time.time()
    try:
        while killed is None and search.poll() is None and time.time() - t0 < 600:
            time.sleep(0.1)
            try:
                import optuna

                study = optuna.load_study(study_name=name, storage=db)
            except Exception:  # noqa: BLE001  the study may not be open yet
                continue
            if not stopped and study.user_attrs.get("ready"):
                # the tiny candidates train in seconds: the search is held still from the moment they are queued
                # so that the worker takes some (and fails the search's own trial as stale: retried too)
                search.send_signal(signal.SIGSTOP)
                stopped = True
            mine = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                    and str(t.user_attrs.get("worker", "")).endswith(f":{w.pid}")]
            # each try of a candidate trains in candidates/NNN/trial-K
            if mine and (run / "candidates" / f"{mine[0].user_attrs['index']:03d}" / f"trial-{mine[0].number}"
                         / "checkpoint.pt").is_file():
                w.send_signal(signal.SIGKILL)         # mid-candidate, after its first checkpoint
                killed = mine[0]
    finally:
        if stopped:
            search.send_signal(signal.SIGCONT)
    w_out, _ = w.communicate(timeout=60)
    out, err = search.communicate(timeout=900)
    assert killed is not None, "the worker never took a candidate: " + err[-2000:] + "\n" + w_out[-2000:]
    assert search.returncode == 0, err[-3000:]
    trials = study_trials(db, name)
    failed = [t for t in trials if t.number == killed.number][0]
    assert failed.state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].user_attrs["index"] == killed.user_attrs["index"] and retried[0].params == killed.params
    # the retry trained in a folder of its own, from a copy of the killed try's checkpoint
    cand = run / "candidates" / f"{killed.user_attrs['index']:03d}"
    assert {d.name for d in cand.iterdir()} == {f"trial-{killed.number}", f"trial-{retried[0].number}"}
    assert not list(cand.glob("*/checkpoint.pt"))            # recorded: no try's weights are kept
    doc = json.loads((run / "pareto.json").read_text())
    assert sorted(c["index"] for c in doc["candidates"]) == list(range(4))
    # the retry resumed the killed worker's checkpoint: every candidate scores as in one process
    one = tmp_path / "one"
    r = subprocess.run(command(teacher, space, one, "random", *extra), env=env(cache), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = {c["index"]: (c["text"], c["score"]) for c in json.loads((one / "pareto.json").read_text())["candidates"]}
    got = {c["index"]: (c["text"], c["score"]) for c in doc["candidates"]}
    assert got == ref


def test_a_second_search_is_not_mixed_into_a_study_it_did_not_make(tiny_teacher, space, cache, tmp_path):
    """A fresh search whose study name is taken (another run's --study-name, or a run directory deleted by
    hand) is refused with one line before it trains, with --overwrite too (the study is another run's);
    the run's own --overwrite replaces its study."""
    teacher, _ = tiny_teacher
    db = f"sqlite:///{tmp_path}/search.db"
    args = ("--candidates", "2", "--epochs", "1", "--storage", db, "--study-name", "mine")
    r = subprocess.run(command(teacher, space, tmp_path / "a", "random", *args), env=env(cache), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(command(teacher, space, tmp_path / "b", "random", *args), env=env(cache), capture_output=True,
                       text=True, timeout=900)
    lines = [x for x in r.stderr.splitlines() if "error" in x]
    assert r.returncode == 2 and len(lines) == 1 and "already holds a study named mine" in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "b").exists()
    # --overwrite replaces a run's own study, never another run's
    r = subprocess.run(command(teacher, space, tmp_path / "b", "random", *args, "--overwrite"), env=env(cache),
                       capture_output=True, text=True, timeout=900)
    lines = [x for x in r.stderr.splitlines() if "error" in x]
    assert r.returncode == 2 and len(lines) == 1 and "made by the search in" in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "b").exists()
    before = [t.datetime_start for t in study_trials(db, "mine")]
    r = subprocess.run(command(teacher, space, tmp_path / "a", "random", *args, "--overwrite"), env=env(cache),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    after = study_trials(db, "mine")
    assert len([t for t in after if t.state.name == "COMPLETE"]) == 2
    assert min(t.datetime_start for t in after) > max(before)      # the old trials went with the old run
    # a worker of a finished search has nothing to do
    r = subprocess.run([sys.executable, "-m", "naskd", "worker", str(tmp_path / "a")], env=env(cache),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "has finished: nothing to evaluate" in r.stdout, r.stdout + r.stderr[-2000:]


def test_an_interrupted_search_queues_its_candidate_again_and_resumes(tiny_teacher, space, cache, tmp_path):
    """Ctrl-C while the search process trains a candidate: Optuna fails that trial, naskd queues the candidate
    again (same index and architecture), and `--resume` trains it from its last checkpoint and finishes."""
    teacher, _ = tiny_teacher
    run, db = tmp_path / "run", f"sqlite:///{tmp_path}/search.db"
    args = command(teacher, space, run, "random", "--candidates", "2", "--epochs", "40", "--checkpoint-every", "2",
                   "--storage", db)
    # SIGINT at its default (a test run started in the background inherits it ignored; Python then never
    # raises KeyboardInterrupt)
    search = subprocess.Popen(args, env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not any((run / "candidates" / "000").glob("trial-*/checkpoint.pt")):
        assert search.poll() is None and time.time() - t0 < 600, search.communicate()[1][-3000:]
        time.sleep(0.2)
    search.send_signal(signal.SIGINT)
    _, err = search.communicate(timeout=300)
    # 130, or (rarely, seen once in seven) the process ends by the signal itself after saying its line: a shell
    # shows 130 for both
    assert search.returncode in (130, -signal.SIGINT), (search.returncode, err)
    assert "interrupted; continue with --resume" in err and "Traceback" not in err, err
    name = yaml.safe_load((run / "config.yaml").read_text())["study_name"]
    trials = study_trials(db, name)
    assert [t.state.name for t in trials if t.user_attrs.get("index") == 0] == ["FAIL", "WAITING"]
    r = subprocess.run(args + ["--resume"], env=env(cache), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((run / "pareto.json").read_text())
    assert sorted(c["index"] for c in doc["candidates"]) == [0, 1]
    assert all(c["epochs"] == 40 for c in doc["candidates"])
