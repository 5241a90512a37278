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
import re
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
    """A study's config: a name under benchmarks/studies/ (with or without .yaml), or the path of a YAML file
    of one's own."""
    if name.endswith((".yaml", ".yml")):
        own = Path(name).expanduser()
        return own if own.is_file() or not (STUDIES / Path(name).name).is_file() else STUDIES / Path(name).name
    return STUDIES / f"{name}.yaml"


def load_config(name: str) -> dict:
    path = study_path(name)
    if not path.is_file():
        if name.endswith((".yaml", ".yml")):
            raise StudyError(f"no study file {path} (and no {Path(name).name} under benchmarks/studies/)")
        raise StudyError(f"no study {name!r} under {STUDIES.relative_to(HERE.parent)}/ "
                         f"(known: {', '.join(study_names())}; or give the path of a .yaml)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a UTF-8 text file (a study is a YAML mapping)") from None
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("args") or {}, dict):
        raise StudyError(f"{path}: a study is a mapping with kind, tables and an `args` mapping")
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise StudyError(f"{path.name}: unknown keys {sorted(unknown)} (a study has {sorted(_CONFIG_KEYS)})")
    if "kind" not in cfg:
        raise StudyError(f"{path.name}: no `kind` (the module of benchmarks/kinds/ it runs)")
    if not isinstance(cfg["kind"], str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", cfg["kind"]):
        raise StudyError(f"{path.name}: kind {cfg['kind']!r} is not the name of a module of benchmarks/kinds/")
    cfg["args"] = cfg.get("args") or {}
    tables = cfg.get("tables")
    if tables is None:
        tables = []
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise StudyError(f"{path.name}: `tables` is a list of table names (stems of benchmarks/results/*.md), "
                         f"got {tables!r}")
    cfg["tables"] = tables
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise StudyError(f"{path.name}: `threads` is a number of threads (1 or more), got {threads!r}")
    return cfg


def load_kind(kind: str):
    if not (KINDS / f"{kind}.py").is_file():
        known = sorted(p.stem for p in KINDS.glob("*.py") if not p.stem.startswith("_") and p.stem != "common")
        raise StudyError(f"no study kind {kind!r} in benchmarks/kinds/ (known: {', '.join(known)})")
    try:
        module = importlib.import_module(kind)
    except (SyntaxError, ImportError) as e:
        raise StudyError(f"benchmarks/kinds/{kind}.py cannot be imported ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not hasattr(module, "PARAMS") or not hasattr(module, "run"):
        raise StudyError(f"benchmarks/kinds/{kind}.py declares no PARAMS or no run(cfg)")
    return module


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise StudyError(f"--set {p!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as e:
            raise StudyError(f"--set {p!r}: the value is not valid YAML ({str(e).splitlines()[0]}); quote it, "
                             "e.g. --set 'seeds=[0, 1]'") from None
    return out


def _type_name(v) -> str:
    if isinstance(v, list):
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(type(v[0]), type(v[0]).__name__)}" if v else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(type(v), type(v).__name__)


def _checked(key: str, value, default, source: str):
    """``value`` for a parameter whose default is ``default``: of its type (an int for a float, a single value
    for a list: [value]); None stays None (an optional setting). StudyError otherwise."""
    if value is None or default is None or default is REQUIRED:
        return value
    want = type(default)
    if isinstance(default, list):
        listed = value if isinstance(value, list) else [value]
        if default and not all(_of_type(x, type(default[0])) for x in listed):
            raise StudyError(f"{source}: {key}={value!r}: expected {_type_name(default)} (default {default!r})")
        return listed
    if not _of_type(value, want):
        raise StudyError(f"{source}: {key}={value!r}: expected {_type_name(default)} (default {default!r})")
    return float(value) if want is float else value


def _of_type(x, want: type) -> bool:
    if want is bool:
        return isinstance(x, bool)
    if want is float:
        return isinstance(x, (int, float)) and not isinstance(x, bool)
    if want is int:
        return isinstance(x, int) and not isinstance(x, bool)
    return isinstance(x, want)


def resolve(name: str, overrides: dict, kind_module=None) -> tuple[dict, SimpleNamespace]:
    """The study's config and its parameters: the kind's defaults, then the config's args, then overrides,
    each checked against its default's type. Strings starting with ``~`` are expanded."""
    cfg = load_config(name)
    module = kind_module or load_kind(cfg["kind"])
    params = module.PARAMS
    if "only" in overrides and "only" not in params:
        raise StudyError(f"--only: the study kind {cfg['kind']} has no stages (run the study whole)")
    values = {k: default for k, (default, _help) in params.items()}
    for source, given in ((study_path(name).name, cfg["args"]), ("--set", overrides)):
        unknown = sorted(set(given) - set(params))
        if unknown:
            raise StudyError(f"{source}: unknown parameter(s) {', '.join(unknown)} of kind {cfg['kind']} "
                             f"(known: {', '.join(sorted(params))})")
        for k, v in given.items():
            values[k] = _checked(k, v, params[k][0], source)
    missing = [k for k, v in values.items() if v is REQUIRED or (v is None and params[k][0] is REQUIRED)]
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
    ap.add_argument("--check", action="store_true", help="check every study config (or the one named) and stop")
    a = ap.parse_args(argv)
    modes = [m for m in ("check", "list", "describe") if getattr(a, m)]
    try:
        if len(modes) > 1:
            raise StudyError(f"--{modes[0]} and --{modes[1]} do different things: give one")
        if a.threads is not None and a.threads < 1:
            raise StudyError(f"--threads {a.threads}: give 1 or more")
        if a.check and a.name:        # one study: the same checks as a run makes before any work
            resolve(a.name, parse_sets(list(a.set) + ([f"only={a.only}"] if a.only else [])))
            print(f"{a.name}: 0 problem(s)")
            return 0
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
    except SystemExit as e:           # a kind's own one-line refusal (a stage it does not have, a failed step)
        if isinstance(e.code, str):
            print(f"benchmarks/run.py {a.name}: {e.code}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)     # `run.py --describe X | head` ends quietly
    sys.exit(main())
