"""The bookkeeping of a search's Optuna study (naskd.search.shared) on a SQLite file, without training: whose
study it is, what a resume may change, when a queued candidate counts as lost, relative SQLite paths."""
from types import SimpleNamespace

import optuna
import pytest

from naskd.errors import NaskdError
from naskd.search import shared
from naskd.search.run import absolute_sqlite


def cfg(tmp_path, **kw):
    base = dict(storage=f"sqlite:///{tmp_path}/s.db", study_name="s", heartbeat=60, strategy="random", epochs=2,
                candidates=3)
    return SimpleNamespace(**{**base, **kw})


def test_a_study_is_never_deleted_or_resumed_by_another_run_directory(tmp_path):
    c = cfg(tmp_path)
    shared.check_study(c, tmp_path / "a", resume=False, overwrite=False)        # none yet: fine
    shared.start_study(c, tmp_path / "a", resume=False, overwrite=False, directions=["maximize"], sampler=None)
    with pytest.raises(NaskdError, match="already holds a study named s: --resume"):
        shared.check_study(c, tmp_path / "a", resume=False, overwrite=False)
    for resume, overwrite in ((False, True), (True, False)):
        with pytest.raises(NaskdError, match="made by the search in .*/a, not .*/b"):
            shared.check_study(c, tmp_path / "b", resume=resume, overwrite=overwrite)
    shared.check_study(c, tmp_path / "a", resume=False, overwrite=True)         # its own: replaced
    shared.check_study(c, tmp_path / "a", resume=True, overwrite=False)         # its own: continued
    (tmp_path / "link").symlink_to(tmp_path / "a")
    shared.check_study(c, tmp_path / "link", resume=True, overwrite=False)      # the same folder by another name


def test_a_resume_must_keep_the_settings_the_candidates_were_made_with(tmp_path):
    c = cfg(tmp_path)
    shared.start_study(c, tmp_path / "a", resume=False, overwrite=False, directions=["maximize"], sampler=None)
    for key, value, flag in (("epochs", 6, "--epochs 6"), ("candidates", 4, "--candidates 4")):
        with pytest.raises(NaskdError, match=f"{flag}: the candidates in the study s were made with"):
            shared.check_study(cfg(tmp_path, **{key: value}), tmp_path / "a", resume=True, overwrite=False)
    # spos' candidates do not depend on --candidates
    s = cfg(tmp_path, strategy="spos", study_name="p")
    shared.start_study(s, tmp_path / "p", resume=False, overwrite=False, directions=["maximize"], sampler=None)
    shared.check_study(cfg(tmp_path, strategy="spos", study_name="p", candidates=9), tmp_path / "p", resume=True,
                       overwrite=False)


def _trial(state, index, value=None):
    return optuna.trial.create_trial(state=state, params={"x": 0}, distributions={
        "x": optuna.distributions.CategoricalDistribution([0, 1])}, user_attrs={"index": index},
        value=value)


def test_a_candidate_every_try_of_which_failed_is_reported_at_the_second_look(tmp_path):
    S = optuna.trial.TrialState
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/l.db", direction="maximize")
    study.add_trial(_trial(S.COMPLETE, 0, 0.5))
    study.add_trial(_trial(S.FAIL, 1))
    study.add_trial(_trial(S.WAITING, 2))
    trials = study.get_trials()
    assert shared.lost_indices(trials, 3) == {1}
    complete = shared.candidates_complete(3, "s")
    assert complete(trials) is False              # a retry may be on its way: not yet
    with pytest.raises(NaskdError, match=r"candidate\(s\) 1 of the study s failed in every try.*--resume"):
        complete(trials)
    study.add_trial(_trial(S.COMPLETE, 1, 0.6))    # retried meanwhile: no longer lost
    study.add_trial(_trial(S.COMPLETE, 2, 0.7))
    fresh = shared.candidates_complete(3, "s")
    assert fresh(study.get_trials()) is True


def test_a_relative_sqlite_file_is_made_absolute_for_workers_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///runs/s.db") == f"sqlite:///{tmp_path}/runs/s.db"
    assert absolute_sqlite("sqlite:////abs/s.db") == "sqlite:////abs/s.db"
    assert absolute_sqlite("postgresql://u:pw@host/db") == "postgresql://u:pw@host/db"


def test_the_count_reached_waits_for_the_trials_other_processes_still_run(tmp_path, monkeypatch):
    """A worker that took a trial just before the search's count was reached completes it after: the search
    must read the trials only once it has, or that architecture is missing from the front (a CI failure)."""
    import threading
    import time

    monkeypatch.setattr(shared, "POLL_SECONDS", 0.05)
    storage = shared.open_shared_storage(f"sqlite:///{tmp_path}/w.db", heartbeat=60)
    study = optuna.create_study(storage=storage, study_name="w", direction="maximize")
    study.add_trial(_trial(optuna.trial.TrialState.COMPLETE, 0, 0.5))
    other = study.ask()                            # the worker's trial, RUNNING
    finished = threading.Event()

    def worker():
        time.sleep(0.5)
        study.tell(other, 0.7)
        finished.set()

    threading.Thread(target=worker).start()
    ran = []
    shared.evaluate_shared(study, lambda t: ran.append(t) or 0.0, lambda ts: True, queued_only=False)
    # read at once: the worker's trial is told before its event is set, so its state is what counts
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())
    assert complete == 2 and not ran
    finished.wait(5)


def test_a_trial_another_process_failed_as_stale_is_dropped_and_the_loop_goes_on(tmp_path, capsys):
    """A process paused past the grace finds its trial failed (and queued again) by another when it tells the
    result: what it computed is dropped with a line, not a traceback, and it takes the next trial."""
    S = optuna.trial.TrialState
    storage = shared.open_shared_storage(f"sqlite:///{tmp_path}/f.db", heartbeat=60)
    study = optuna.create_study(storage=storage, study_name="f", direction="maximize")
    told = []

    def objective(trial):
        if len(told) < 2:          # the first two: another process fails them meanwhile
            storage.set_trial_state_values(trial._trial_id, state=S.FAIL)
        told.append(trial.number)
        if len(told) == 2:         # found out when an attribute is set rather than when the result is told
            trial.set_user_attr("candidate", {})
        return 1.0

    shared.evaluate_shared(study, objective, lambda ts: any(t.state == S.COMPLETE for t in ts), queued_only=False)
    assert [t.state for t in study.get_trials()] == [S.FAIL, S.FAIL, S.COMPLETE] and told == [0, 1, 2]
    assert capsys.readouterr().out.count("was failed as stale by another") == 2

    def broken(trial):
        raise ValueError("a bug of the objective")

    with pytest.raises(ValueError, match="a bug of the objective"):
        shared.evaluate_shared(study, broken, lambda ts: False, queued_only=False)
