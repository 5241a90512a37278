"""Candidate evaluation shared through an Optuna storage: ``naskd search --storage URL`` and ``naskd worker RUN``.

The search process opens one Optuna study in the storage (SQLite on one machine; PostgreSQL or MySQL across
machines, with the run directory on a filesystem every machine mounts at the same path). Once what the
candidates need is ready (spos: the trained supernet's checkpoint; random: every candidate drawn and enqueued
as a fixed trial), the search process and any number of ``naskd worker RUN`` processes take trials from the
study through ``Study.optimize`` until the search's number is complete; the search process then reads every
completed trial back and writes the front as a one-process search does.

A worker that dies leaves its trial RUNNING with a heartbeat that stops: once it is ``3 x --heartbeat``
seconds old, the next process that looks fails it (Optuna's ``fail_stale_trials``) and Optuna's
``RetryHeartbeatStaleTrialCallback`` enqueues a copy with the same architecture (and, for random, the same
candidate index, whose checkpoint the next taker resumes from). The trials, the sampler's decisions and the
retries are Optuna's; naskd adds no scheduler of its own.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Callable

from ..errors import NaskdError

MAX_RETRY = 3              # a candidate whose workers die this many times is given up (its trial stays FAIL)
POLL_SECONDS = 2.0         # how often a process waiting on others looks at the study again


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it evaluates (``evaluated_by`` in metrics.json)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def default_study_name(run_dir) -> str:
    """``naskd-search-<folder>-<hash of its resolved path>``: one study per run directory."""
    path = str(Path(run_dir).resolve())
    return f"naskd-search-{Path(path).name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _quiet_experimental() -> None:
    """Optuna marks heartbeats and their retry callback experimental (a warning at every call): said once
    here, in the docs, instead of on every trial; Optuna's own trial log is kept to errors."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # a failed trial is logged by Optuna with its traceback; naskd says what happened in its own line
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def open_shared_storage(url: str, heartbeat: int):
    """The RDB storage of ``url`` with heartbeats every ``heartbeat`` seconds, a grace of three, and stale
    trials retried (at most :data:`MAX_RETRY` times each). Raises :class:`NaskdError` (one line, the password
    masked) when it cannot be opened."""
    import optuna

    from ..tune import open_storage

    _quiet_experimental()
    return open_storage(url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=MAX_RETRY))


def study_exists(storage, name: str) -> bool:
    import optuna

    return name in optuna.study.get_all_study_names(storage)


# the settings a study's candidates depend on, recorded in it and compared when the search is resumed
STUDY_SETTINGS = {"spos": ("epochs",), "random": ("epochs", "candidates")}


def check_study(cfg, run_dir, *, resume: bool, overwrite: bool) -> None:
    """Before the run directory is made or replaced: refuse a study in ``cfg.storage`` named
    ``cfg.study_name`` that a fresh search would mix with (unless ``overwrite``), that belongs to another run
    directory (``overwrite`` never deletes another run's study; a resume never takes its trials), or whose
    candidates were made with other settings than a resume asks for (:data:`STUDY_SETTINGS`). Raises
    :class:`NaskdError`, one line with the way out."""
    import optuna

    from ..utils.urls import shown as _shown

    storage = open_shared_storage(cfg.storage, cfg.heartbeat)
    name = cfg.study_name
    if not study_exists(storage, name):
        return
    where = f"--storage {_shown(cfg.storage)} already holds a study named {name}"
    if not resume and not overwrite:
        raise NaskdError(f"{where}: --resume continues it, --overwrite replaces it, or name another with "
                         "--study-name")
    attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    owner = attrs.get("run_dir")
    if owner is not None and owner != str(Path(run_dir).resolve()):
        raise NaskdError(f"{where}, made by the search in {owner}, not {run_dir}: name another with --study-name "
                         "(--overwrite replaces only this run's own study)")
    if resume:
        made = attrs.get("settings", {})
        for key in STUDY_SETTINGS.get(cfg.strategy, ()):
            if key in made and made[key] != getattr(cfg, key):
                flag = "--" + key.replace("_", "-")
                raise NaskdError(f"{flag} {getattr(cfg, key)}: the candidates in the study {name} were made with "
                                 f"{flag} {made[key]}; resume with {flag} {made[key]}, or start again with --overwrite")


def start_study(cfg, run_dir, *, resume: bool, overwrite: bool, directions: list[str], sampler):
    """The search process's study (checked by :func:`check_study` before the run directory was made): deleted
    first on ``overwrite``, created or continued, marked with its run directory and settings."""
    import optuna

    storage = open_shared_storage(cfg.storage, cfg.heartbeat)
    name = cfg.study_name
    if overwrite and not resume and study_exists(storage, name):
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler,
                                load_if_exists=True)
    study.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    study.set_user_attr("strategy", cfg.strategy)
    study.set_user_attr("settings", {k: getattr(cfg, k) for k in STUDY_SETTINGS.get(cfg.strategy, ())})
    study.set_user_attr("ready", False)       # workers wait until the search says what they need is there
    study.set_user_attr("finished", False)
    return study


def evaluate_shared(study, objective: Callable, complete: Callable[[list], bool], *, queued_only: bool,
                    progress: Callable[[list], None] | None = None) -> None:
    """Take trials of ``study`` one at a time through ``Study.optimize`` (which keeps the trial's heartbeat and
    fails other processes' stale trials first) until ``complete(trials)`` holds. With ``queued_only`` a trial
    is taken only while one waits in the queue (random's enqueued candidates): otherwise this process waits
    for the others' running trials, failing stale ones so that their retries are queued.

    Once ``complete(trials)`` holds, the trials other processes still run (taken before the count was reached)
    are waited for, so that the completed trials the caller then reads are all there will be: none is left out
    of the front."""
    import optuna

    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if progress is not None:
            progress(trials)
        if complete(trials):
            wait_for_running(study)
            return
        if queued_only and not any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            time.sleep(POLL_SECONDS)
            continue
        returned: list = []

        def run(trial):
            try:
                value = objective(trial)
            except optuna.exceptions.UpdateFinishedTrialError:     # an attribute set on a trial failed meanwhile
                returned.append(trial)
                raise
            returned.append(trial)
            return value

        try:
            study.optimize(run, n_trials=1, catch=())
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, AssertionError):
            # the objective ran to its end, but another process had failed the trial meanwhile: Optuna raises
            # UpdateFinishedTrialError when an attribute of it is set, ValueError "Cannot tell a FAIL trial."
            # when its result is told (5.0: an AssertionError from its bookkeeping after it); an objective that
            # raised anything else (re-raised as is) or a trial not failed is a bug
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            if not returned or states.get(returned[0].number) != optuna.trial.TrialState.FAIL:
                raise
            # this process was silent past the grace (paused, swapped out): another failed its trial as stale
            # and queued it again; what it computed is dropped and the loop goes on
            print("[search] a trial of this process was failed as stale by another (it was silent for over "
                  "three heartbeats) and queued again; going on", flush=True)


def wait_for_running(study) -> None:
    """Return once no trial of ``study`` is RUNNING: each finishes, or is failed as stale once its process has
    been silent for three heartbeats (Optuna's ``fail_stale_trials``)."""
    import optuna

    said = False
    while True:
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        if not said:
            print(f"[search] waiting for {len(running)} trial(s) other processes are still evaluating", flush=True)
            said = True
        time.sleep(POLL_SECONDS)


def lost_indices(trials, n: int) -> set:
    """The queued candidates (user attribute ``index`` < ``n``) no trial of which is complete, waiting or
    running: every try failed (an error, or Optuna's retries of a dead worker used up)."""
    import optuna

    S = optuna.trial.TrialState
    alive = {t.user_attrs.get("index") for t in trials if t.state in (S.COMPLETE, S.WAITING, S.RUNNING)}
    return set(range(n)) - alive


def candidates_complete(n: int, name: str) -> Callable[[list], bool]:
    """The completion test of ``n`` queued candidates: true once each has a complete trial; a candidate lost
    (:func:`lost_indices`) at two looks in a row (a stale trial is failed and its retry queued in two
    steps) is a :class:`NaskdError` naming the way out."""
    import optuna

    seen: set = set()

    def complete(trials) -> bool:
        done = {t.user_attrs.get("index") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        if done >= set(range(n)):
            return True
        lost = lost_indices(trials, n)
        if lost & seen:
            raise NaskdError(f"candidate(s) {', '.join(map(str, sorted(lost & seen)))} of the study {name} failed "
                             "in every try (see the output of the process that ran it); `naskd search --resume` "
                             "queues them again")
        seen.clear()
        seen.update(lost)
        return False

    return complete


def completed(trials, key: str = "candidate") -> list[dict]:
    """The records (user attribute ``key``) of the COMPLETE trials, in trial order, each with its trial
    number and the worker that evaluated it."""
    import optuna

    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE and key in t.user_attrs:
            out.append({**t.user_attrs[key], "trial": t.number, "worker": t.user_attrs.get("worker")})
    return out


def evaluated_by(records: list[dict]) -> dict:
    """{worker: number of candidates it evaluated}."""
    from collections import Counter

    return dict(Counter(r.get("worker") or "?" for r in records))


def wait_for(study, attr: str, *, timeout: float, what: str) -> object:
    """The study's user attribute ``attr`` once set true (a worker waiting for the search to be ready), or None
    when the search has finished; :class:`NaskdError` after ``timeout`` seconds."""
    t0, said = time.time(), False
    while True:
        attrs = study.user_attrs
        if attrs.get("finished"):
            return None
        if attrs.get(attr):
            return attrs[attr]
        if time.time() - t0 > timeout:
            raise NaskdError(f"waited {timeout:g} s for {what}; start the worker again once it is, or raise --timeout")
        if not said:
            print(f"[worker] waiting for {what} (Ctrl-C leaves; nothing is lost)", flush=True)
            said = True
        time.sleep(POLL_SECONDS)
