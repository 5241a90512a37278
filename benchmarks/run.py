"""Run one study of benchmarks/: a config under benchmarks/studies/ names its code and its parameters.

A study is data: `benchmarks/studies/NAME.yaml` says which study code it runs (`kind`, a module of
benchmarks/kinds/), with which parameters (`args`), on how many threads, and which tables of
benchmarks/results/ it writes (`tables`). The code of a kind declares its parameters once (`PARAMS`: name ->
(default, help), `REQUIRED` for none) and exposes `run(cfg)`; this runner checks a config against them,
applies overrides, and records the command that reproduces the tables in each of them.

Usage:
  python benchmarks/run.py NAME [--set KEY=VALUE ...] [--only STAGE]   run a study (resumable: run it again)
  python benchmarks/run.py my_study.yaml ...                           a study config of one's own
  python benchmarks/run.py --list                                      every study, its kind and tables
  python benchmarks/run.py --describe NAME                             a study's parameters and their values
  python benchmarks/run.py --check                                     every config against its kind's PARAMS

Values given with --set are read as YAML (``--set seeds=[0,1]``, ``--set speedup=25``); ``--only STAGE`` is
``--set only=STAGE``. Bad input (an unknown study, kind or parameter, a required one missing) is one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

HERE = Path(__file__).resolve().parent
STUDIES = HERE / "studies"
KINDS = HERE / "kinds"
_CONFIG_KEYS = {"kind", "about", "tables", "threads", "args"}
sys.path.insert(0, str(KINDS))
from common import REQUIRED  # noqa: E402  (light: no torch import before the study's thread count is set)


class StudyError(Exception):
    """A config or an override that cannot run: the message is the one line a user sees."""


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.yaml"))


def study_path(name: str) -> Path:
    """A study's config: a name under benchmarks/studies/, or the path of a YAML file of one's own."""
    return Path(name).expanduser() if name.endswith((".yaml", ".yml")) else STUDIES / f"{name}.yaml"


def load_config(name: str) -> dict:
    path = study_path(name)
    if not path.is_file():
        raise StudyError(f"no study {name!r} under {STUDIES.relative_to(HERE.parent)}/ "
                         f"(known: {', '.join(study_names())}; or give the path of a .yaml)")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("args", {}), dict):
        raise StudyError(f"{path}: a study is a mapping with kind, tables and an `args` mapping")
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise StudyError(f"{path.name}: unknown keys {sorted(unknown)} (a study has {sorted(_CONFIG_KEYS)})")
    if "kind" not in cfg:
        raise StudyError(f"{path.name}: no `kind` (the module of benchmarks/kinds/ it runs)")
    cfg.setdefault("args", {})
    cfg.setdefault("tables", [])
    return cfg


def load_kind(kind: str):
    if not (KINDS / f"{kind}.py").is_file():
        known = sorted(p.stem for p in KINDS.glob("*.py") if not p.stem.startswith("_") and p.stem != "common")
        raise StudyError(f"no study kind {kind!r} in benchmarks/kinds/ (known: {', '.join(known)})")
    module = importlib.import_module(kind)
    if not hasattr(module, "PARAMS") or not hasattr(module, "run"):
        raise StudyError(f"benchmarks/kinds/{kind}.py declares no PARAMS or no run(cfg)")
    return module


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise StudyError(f"--set {p!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = yaml.safe_load(value) if value != "" else None
    return out


def resolve(name: str, overrides: dict, kind_module=None) -> tuple[dict, SimpleNamespace]:
    """The study's config and its parameters: the kind's defaults, then the config's args, then overrides.
    Strings starting with ``~`` are expanded."""
    cfg = load_config(name)
    module = kind_module or load_kind(cfg["kind"])
    params = module.PARAMS
    for source, values in ((study_path(name).name, cfg["args"]), ("--set", overrides)):
        unknown = sorted(set(values) - set(params))
        if unknown:
            raise StudyError(f"{source}: unknown parameter(s) {', '.join(unknown)} of kind {cfg['kind']} "
                             f"(known: {', '.join(sorted(params))})")
    values = {k: default for k, (default, _help) in params.items()}
    values.update(cfg["args"])
    values.update(overrides)
    missing = [k for k, v in values.items() if v is REQUIRED]
    if missing:
        raise StudyError(f"study {name}: parameter(s) {', '.join(missing)} required "
                         f"(give them in {study_path(name)} or with --set KEY=VALUE)")
    return cfg, SimpleNamespace(**{k: _expand(v) for k, v in values.items()})


def _expand(v):
    """``~`` expanded in a string value and in the strings of a list value."""
    if isinstance(v, list):
        return [_expand(x) for x in v]
    return os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v


def command_of(name: str, sets: list[str], only, threads) -> str:
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    args = "".join(f" --set {shlex.quote(s)}" for s in sets) + (f" --only {shlex.quote(only)}" if only else "")
    return f"{env}python benchmarks/run.py {name}{args}"


def describe(name: str, overrides: dict | None = None) -> str:
    cfg = load_config(name)
    module = load_kind(cfg["kind"])
    _, values = resolve(name, overrides or {}, module)
    lines = [f"{name}: kind {cfg['kind']}, tables {', '.join(cfg['tables']) or '(none)'}"
             + (f", {cfg['threads']} thread(s)" if cfg.get("threads") else "")]
    if cfg.get("about"):
        lines.append(f"  {cfg['about']}")
    for k, (_default, help_) in module.PARAMS.items():
        mark = ("  (set here)" if k in (overrides or {}) else "  (set by the study)" if k in cfg["args"] else "")
        lines.append(f"  {k} = {getattr(values, k)!r}{mark}: {help_}")
    return "\n".join(lines)


def check_all() -> list[str]:
    """Every study config resolves against its kind (parameters known, none required missing); every table of
    benchmarks/results/ is claimed by exactly one study. Returns the problems (empty: all good)."""
    problems = []
    claims: dict[str, list[str]] = {}
    for name in study_names():
        try:
            cfg, _ = resolve(name, {})
        except StudyError as e:
            problems.append(str(e))
            continue
        for t in cfg["tables"]:
            claims.setdefault(t, []).append(name)
    for md in sorted((HERE / "results").glob("*.md")):
        owners = claims.get(md.stem, [])
        if len(owners) != 1:
            problems.append(f"benchmarks/results/{md.name}: claimed by {len(owners)} studies {owners} (one expected)")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Studies: benchmarks/studies/*.yaml; "
                                 "their code: benchmarks/kinds/*.py.")
    ap.add_argument("name", nargs="?", help="a study: the stem of a file under benchmarks/studies/")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one parameter (YAML value); repeatable")
    ap.add_argument("--only", metavar="STAGE", help="shorthand for --set only=STAGE (the kinds that have stages)")
    ap.add_argument("--threads", type=int, metavar="N", help="intra-op threads of this run, over the study's "
                    "`threads` (e.g. 2 for a bench step of a study whose lanes run on one thread each)")
    ap.add_argument("--list", action="store_true", help="list the studies")
    ap.add_argument("--describe", action="store_true", help="print the study's parameters and stop")
    ap.add_argument("--check", action="store_true", help="check every study config and stop")
    a = ap.parse_args(argv)
    try:
        if a.check:
            problems = check_all()
            for p in problems:
                print(p, file=sys.stderr)
            print(f"{len(study_names())} studies checked: {len(problems)} problem(s)")
            return 1 if problems else 0
        if a.list:
            for n in study_names():
                c = load_config(n)
                print(f"{n}: {c['kind']} -> {', '.join(c['tables']) or '(no table yet)'}")
            return 0
        if not a.name:
            raise StudyError("name a study (python benchmarks/run.py --list shows them)")
        overrides = parse_sets(list(a.set) + ([f"only={a.only}"] if a.only else []))
        if a.describe:
            print(describe(a.name, overrides))
            return 0
        cfg = load_config(a.name)
        if a.threads is not None and a.threads < 1:
            raise StudyError(f"--threads {a.threads}: give 1 or more")
        threads = a.threads or cfg.get("threads")
        if threads:                   # before torch is imported by the kind: intra-op threads of every library
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(threads)
        module = load_kind(cfg["kind"])
        _, values = resolve(a.name, overrides, module)
    except StudyError as e:
        print(f"benchmarks/run.py: {e}", file=sys.stderr)
        return 2
    import common

    common.CURRENT.update(name=a.name, tables=list(cfg["tables"]),
                          command=command_of(a.name, a.set, a.only, threads))
    from naskd.errors import NaskdError

    try:
        module.run(values)
    except NaskdError as e:           # bad input found by the package (a run neither finished nor recorded, ...)
        print(f"benchmarks/run.py {a.name}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
