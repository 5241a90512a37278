"""benchmarks/ holds studies as data: every config under benchmarks/studies/ resolves against the parameters its
kind declares, every committed table is claimed by exactly one study, and the runner refuses bad input in
one line. The runner is run as a user runs it (a subprocess); no test imports a benchmark script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "run.py"


def runner(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_every_study_resolves_and_every_table_has_one_study():
    r = runner("--check")
    assert r.returncode == 0, r.stderr
    assert "0 problem(s)" in r.stdout


def test_no_test_imports_a_benchmark_script():
    kinds = {p.stem for p in (ROOT / "benchmarks" / "kinds").glob("*.py")} | {"run", "common", "device_kit"}
    for test in (ROOT / "tests").rglob("*.py"):
        if test.resolve() == Path(__file__).resolve():
            continue
        text = test.read_text()
        for k in kinds:
            assert f"import {k}\n" not in text and f"from {k} import" not in text, (test, k)
        assert "benchmarks.kinds" not in text and "sys.path.insert" not in text, test


def test_describe_shows_the_config_values_over_the_kind_defaults():
    r = runner("--describe", "strategy_budget_sst2_macro")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("strategy_budget_sst2_macro: kind strategy_budget, tables strategy_budget_sst2_macro")
    teacher = next(x for x in lines if x.strip().startswith("teacher = "))
    assert "sst2-teacher-e1" in teacher and "(set by the study)" in teacher and "~" not in teacher.split("=")[1]
    speed = next(x for x in lines if x.strip().startswith("speedup = "))
    assert "20.0" in speed and "(set by the study)" not in speed


def test_a_scalar_for_a_list_parameter_is_a_list_of_one(tmp_path):
    r = runner("strategy_budget_sst2_macro", "--set", "seeds=5", "--describe")
    assert r.returncode == 0, r.stderr
    assert "seeds = [5]  (set here)" in r.stdout


def test_a_study_config_of_ones_own(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("kind: strategy_budget\ntables: []\nargs:\n  teacher: t\n  root: r\n  seeds: [5]\n")
    r = runner("--describe", cfg)
    assert r.returncode == 0, r.stderr
    assert "seeds = [5]  (set by the study)" in r.stdout


@pytest.mark.parametrize("args, says", [
    (["no_such_study"], "no study 'no_such_study'"),
    (["strategy_budget_sst2_macro", "--set", "bogus=1", "--describe"], "unknown parameter(s) bogus"),
    (["strategy_budget_sst2_macro", "--set", "novalue"], "expected KEY=VALUE"),
    ([], "name a study"),
    (["strategy_budget_sst2_macro", "--set", "speedup=fast", "--only", "table"], "speedup='fast': expected a number"),
    (["strategy_budget_sst2_macro", "--set", "seeds=abc", "--describe"], "expected a list of integers"),
    (["strategy_budget_sst2_macro", "--set", "seeds=[0,1", "--describe"], "the value is not valid YAML"),
    (["strategy_budget_sst2_macro", "--set", "teacher=", "--describe"], "parameter(s) teacher required"),
    (["strategy_budget_sst2_macro", "--only", "bogus"], "only='bogus': one of search, retrain, table"),
    (["search_steps", "--only", "table"], "has no stages"),
    (["strategy_budget_sst2_macro", "--threads", "0"], "--threads 0: give 1 or more"),
    (["--list", "--describe"], "give one"),
])
def test_bad_input_is_one_line_and_status_2(args, says):
    r = runner(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


@pytest.mark.parametrize("text, says", [
    ("kind: no_such_kind\nargs: {}\n", "no study kind 'no_such_kind'"),
    ("kind: strategy_budget\nargs:\n  teacher: t\n", "parameter(s) root required"),
    ("kind: strategy_budget\nseeds: [1]\n", "unknown keys ['seeds']"),
    ("kind: [unclosed\n", "not valid YAML"),
    ("args: {}\n", "no `kind`"),
    ("kind: ../run\n", "is not the name of a module"),
    ("kind: strategy_budget\ntables: a_table\nargs: {teacher: t, root: r}\n", "`tables` is a list"),
    ("kind: strategy_budget\nthreads: abc\nargs: {teacher: t, root: r}\n", "`threads` is a number"),
])
def test_bad_configs_are_refused_in_one_line(tmp_path, text, says):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    r = runner(cfg, "--describe")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
