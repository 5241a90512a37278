"""`naskd tune`: Optuna over retraining (or, with ``--stage teacher``, teacher fine-tuning) hyperparameters,
with studies shared through a database.

Each trial is one `naskd retrain` run (its own run directory under ``<out>/trial-NNNN``) with sampled
settings; the objective is its best dev value of the task's main metric, reported per epoch so that
Optuna's median pruner stops poor trials early. ``--storage`` takes any Optuna storage URL
(``sqlite:///runs/tune.db``, ``postgresql://...``): several processes or machines running the same
``--study-name`` share one study, and a killed tuning run continues where it stopped.

Search space (each item can be fixed by passing the retrain flag instead, e.g. ``--set lr=1e-3``):
lr (log-uniform 1e-4..3e-3), dropout (0..0.3), weight decay (log-uniform 1e-4..1e-1), and for the default
sentence-task criteria the soft/hard mix a in soft_ce=a,hard_ce=1-a,pkd=b with b log-uniform in 0.1..10
and the temperature in 1..8.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import NaskdError
from .utils.io import write_json
from .utils.urls import shown as _shown

SPACES = ("lr", "dropout", "weight_decay", "kd")
TEACHER_SELECTION = 1000     # whole rows carved from train that a teacher trial is chosen on (never dev)


# dimension -> (teacher setting, how a trial draws it)
_TEACHER_DRAWS = {
    "lr": ("lr", lambda t: t.suggest_float("lr", 1e-5, 2e-4, log=True)),
    "epochs": ("epochs", lambda t: t.suggest_int("epochs", 1, 3)),
    "warmup": ("warmup_ratio", lambda t: t.suggest_float("warmup_ratio", 0.0, 0.2)),
    "weight_decay": ("weight_decay", lambda t: t.suggest_float("weight_decay", 1e-4, 1e-1, log=True)),
    "layer_lr_decay": ("layer_lr_decay", lambda t: t.suggest_float("layer_lr_decay", 0.6, 1.0)),
    "dropout": ("dropout", lambda t: t.suggest_float("dropout", 0.0, 0.3)),
    "pooling": ("pooling", lambda t: t.suggest_categorical("pooling", ["mean", "cls"])),
}


TEACHER_SPACES = tuple(_TEACHER_DRAWS)


def suggest_teacher(trial, names: tuple[str, ...]) -> dict:
    """A teacher recipe (`naskd teacher` settings): lr log-uniform 1e-5..2e-4, 1-3 epochs, warm-up 0..0.2,
    weight decay log-uniform 1e-4..1e-1, layer-wise lr decay 0.6..1, classifier dropout 0..0.3, pooling."""
    return {setting: draw(trial) for name, (setting, draw) in _TEACHER_DRAWS.items() if name in names}


def suggest(trial, names: tuple[str, ...]) -> dict:
    s = {}
    if "lr" in names:
        s["lr"] = trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    if "dropout" in names:
        s["dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    if "weight_decay" in names:
        s["weight_decay"] = trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True)
    if "kd" in names:
        a = trial.suggest_float("soft_weight", 0.0, 1.0)
        b = trial.suggest_float("pkd_weight", 0.1, 10.0, log=True)
        s["kd"] = f"soft_ce={a:.4f},hard_ce={1 - a:.4f},pkd={b:.4f}"
        s["temperature"] = trial.suggest_float("temperature", 1.0, 8.0)
    return s


def run_tune(base: dict, *, trials: int, out: str | None, storage: str | None, study_name: str | None,
             space: tuple[str, ...] | None = None, seed: int = 0, prune: bool = True, overwrite: bool = False,
             resume: bool = False, stage: str = "retrain") -> dict:
    """Run (or, with ``resume``, continue) the study; write ``<out>/tune.json``. A second study into an
    existing ``out`` is refused unless ``resume`` (same settings; ``trials`` may grow) or ``overwrite`` (which
    also deletes the study of that name from a persistent ``storage``).

    ``stage="retrain"``: each trial a `naskd retrain` scored on dev per epoch. ``stage="teacher"``: each trial
    a `naskd teacher` fine-tuning (:func:`suggest_teacher`'s recipe) chosen and pruned on a selection split
    carved from train (``selection_examples``, default ``TEACHER_SELECTION``, of whole rows with the rows inside
    them kept out of training, ``selection_from`` "sentences": see :mod:`naskd.data.selection`; scored twice an epoch,
    ``evals_per_epoch`` 2), never on dev; each trial's dev score is recorded beside it for the report."""
    import optuna

    if stage not in ("retrain", "teacher"):
        raise NaskdError(f"unknown tuning stage {stage!r}; known: retrain, teacher")
    known = SPACES if stage == "retrain" else TEACHER_SPACES
    space = known if space is None else space
    unknown = set(space) - set(known)
    if unknown:
        raise NaskdError(f"unknown tuning dimensions {sorted(unknown)} for --stage {stage}; known: {', '.join(known)}")
    if trials < 1:
        raise NaskdError(f"--trials must be at least 1, got {trials}")
    if stage == "teacher":
        from .teachers.finetune import finetune_teacher, resolve_teacher_config

        base = {"selection_examples": TEACHER_SELECTION, "selection_from": "sentences", "evals_per_epoch": 2, **base}
        probe = resolve_teacher_config(base)      # every fixed setting checked before the first trial
    else:
        from .students.retrain import resolve_retrain_config, retrain

        probe = resolve_retrain_config(base)
    from .data.tasks import TAGGING, get_task

    spec = get_task(probe.task)
    if spec.kind == TAGGING and "kd" in space:
        space = tuple(x for x in space if x != "kd")   # the soft/hard/pkd mix is a sentence-task recipe
    root = Path(out or f"runs/{spec.name}-tune" + ("-teacher" if stage == "teacher" else ""))
    db = check_storage(storage, root)              # a URL that cannot work is refused before the run directory
    name = study_name or f"naskd-{spec.name}"
    if resume and storage is None:
        raise NaskdError("--resume continues a study kept in a database; an in-memory study ends with its "
                         "process: pass the --storage it ran with, or start again with --overwrite")
    settings = {"base": base, "trials": trials, "space": list(space), "seed": seed, "prune": prune,
                "storage": storage and _shown(storage), "study_name": name, "stage": stage}   # no password kept
    from .utils.rundir import prepare_run_dir, reads_of

    prepare_run_dir(root, command="tune", overwrite=overwrite, resume=resume, settings=settings,
                    reads=reads_of(probe, db))
    opened = open_storage(storage)
    if overwrite and opened is not None and name in optuna.study.get_all_study_names(opened):
        optuna.delete_study(study_name=name, storage=opened)    # the run being replaced: its trials go too
    study = optuna.create_study(study_name=name, storage=opened, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_warmup_steps=1) if prune
                                else optuna.pruners.NopPruner())

    # a resumed study (or a second worker) must not replay the first worker's random draws
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))

    def objective(trial):
        pick = suggest(trial, space) if stage == "retrain" else suggest_teacher(trial, space)
        settings = {**base, **pick, "out": str(root / f"trial-{trial.number:04d}")}
        trial.set_user_attr("settings", settings)

        def on_epoch(epoch, metrics):
            trial.report(metrics[spec.main_metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        if stage == "retrain":
            m = retrain(resolve_retrain_config(settings), overwrite=True, on_epoch=on_epoch)
            return m["dev"][spec.main_metric]
        m = finetune_teacher(resolve_teacher_config(settings), overwrite=True, on_epoch=on_epoch)
        trial.set_user_attr("dev", m["dev"])          # reported, never chosen on
        return m["selection"][spec.main_metric]

    done = len([t for t in study.trials if t.state.is_finished()])
    study.optimize(objective, n_trials=max(0, trials - done))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise NaskdError("no trial finished (all pruned or failed); see the trial directories under " + str(root))
    best = study.best_trial
    result = {"command": "tune", "stage": stage, "task": spec.name, "study": name, "storage": _shown(storage) if storage else "in memory",
              "metric": spec.main_metric, "chosen_on": "dev" if stage == "retrain" else "selection split",
              "best_value": best.value, "best_trial": best.number, "best_settings": best.user_attrs.get("settings"),
              "best_dev": best.user_attrs.get("dev"),
              "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                          **({"dev": t.user_attrs["dev"]} if "dev" in t.user_attrs else {})}
                         for t in study.trials]}
    write_json(root / "tune.json", result)
    result["_out"] = str(root / "tune.json")
    return result


def parse_set(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise NaskdError(f"--set expects key=value, got {item!r}")
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def dump(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2)


_STORAGE_HELP = ("an Optuna storage URL such as sqlite:///runs/tune.db (a file in an existing or to-be-made "
                 "folder) or postgresql://USER@HOST/DB")
# Python modules of the database drivers SQLAlchemy imports -> what pip installs them as
_DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
            "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000", "mysql": "mysql-connector-python"}


def check_storage(storage: str | None, root: Path | None = None) -> Path | None:
    """Refuse an Optuna ``--storage`` URL that cannot work, without opening it (nothing is created): one
    that does not parse, names an unknown database, lacks its Python driver, or (SQLite) puts the file in
    a folder that does not exist and that the run directory ``root`` will not create. ``None`` (in
    memory) passes. Returns the SQLite database file (a path the run reads), else None. Raises
    :class:`NaskdError`."""
    if storage is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if storage.startswith("redis"):
        raise NaskdError(f"--storage {_shown(storage)}: Optuna no longer opens Redis URLs; give {_STORAGE_HELP}")
    try:
        url = make_url(storage)
        dialect = url.get_dialect()
    except NoSuchModuleError:                     # (a kind of ArgumentError: caught first)
        raise NaskdError(f"--storage {_shown(storage)}: unknown database kind {url.drivername!r}; give "
                         f"{_STORAGE_HELP}") from None
    except (ArgumentError, ValueError):          # ValueError: a port that is not a number
        raise NaskdError(f"--storage {_shown(storage)!r} is not a database URL; give {_STORAGE_HELP}") from None
    try:
        dialect.import_dbapi() if hasattr(dialect, "import_dbapi") else dialect.dbapi()
    except ImportError as e:
        module = (e.name or "").split(".")[0]
        raise NaskdError(f"--storage {_shown(storage)}: the Python driver for {url.get_backend_name()} is not "
                         f"installed ({e}); install it (`pip install {_DRIVERS.get(module, module or 'DRIVER')}`), "
                         f"name another driver in the URL (e.g. postgresql+psycopg2://, mysql+pymysql://) or use "
                         "sqlite:///FILE") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = Path(url.database).expanduser().absolute().parent
        # the run directory is made with its parents before the study is opened
        made = root is not None and folder in (Path(root).absolute(), *Path(root).absolute().parents)
        if not folder.is_dir() and not made:
            raise NaskdError(f"--storage {_shown(storage)}: the folder {folder} does not exist; create it or "
                             "put the database file elsewhere")
        return Path(url.database).expanduser()
    return None


def open_storage(storage: str | None, **rdb):
    """The Optuna storage of ``--storage`` (``None``: in memory), opened (tables made where new; ``rdb``: more
    keywords of ``optuna.storages.RDBStorage``, e.g. heartbeats). Raises
    :class:`NaskdError`, with the URL's password masked, when it cannot be opened: unreadable or unwritable
    file, unreachable server, refused login."""
    if storage is None:
        return None
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    check_storage(storage)
    try:
        return optuna.storages.RDBStorage(storage, **rdb)
    except (SQLAlchemyError, ImportError, ValueError, OSError) as e:
        lines = str(getattr(e, "orig", None) or e).strip().splitlines()
        reason = lines[0][:160] if lines else type(e).__name__
        raise NaskdError(f"--storage {_shown(storage)} cannot be opened ({reason}); check the path or server and "
                         f"its permissions, or give {_STORAGE_HELP}") from None
