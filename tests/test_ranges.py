"""Issue 19, kind 7: every number a command reads has a declared range, checked when the settings are read
(before any run directory exists), with the range in the one-line message; zero is never read as "the
default"."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing

import pytest
import torch
import yaml

from naskd import config as C
from naskd.augment.run import AugmentConfig
from naskd.cli import build_parser, main
from naskd.errors import NaskdError
from naskd.genotype import Genotype
from naskd.search.derive import derive
from naskd.search.run import SearchConfig
from naskd.students.retrain import RetrainConfig
from naskd.teachers.finetune import TeacherConfig

from .conftest import DATA

CONFIGS = {"teacher": TeacherConfig, "search": SearchConfig, "retrain": RetrainConfig, "augment": AugmentConfig}


def _numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, C.numeric_kind(hints[f.name])) for f in dataclasses.fields(cls)
            if C.numeric_kind(hints[f.name]) and not f.metadata.get("choices")]


def _outside(r: C.Range, integer: bool) -> list:
    """Values just outside the range (and, for floats, NaN and infinity)."""
    step = 1 if integer else 0.5
    vals = []
    if r.low is not None:
        vals.append(r.low if r.low_open else r.low - step)
    if r.high is not None:
        vals.append(r.high if r.high_open else r.high + step)
    if not integer:
        vals += [math.nan, math.inf]
    return vals


def _inside(r: C.Range, integer: bool) -> list:
    """The closed bounds themselves, and a value just inside an open bound."""
    eps = 1 if integer else 1e-9
    vals = []
    if r.low is not None:
        vals.append(r.low + eps if r.low_open else r.low)
    if r.high is not None:
        vals.append(r.high - eps if r.high_open else r.high)
    return vals


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_every_numeric_setting_of_every_command_declares_a_range():
    missing = [f"{name}.{f.name}" for name, cls in CONFIGS.items() for f, _ in _numeric_fields(cls)
               if f.metadata.get("range") is None]
    assert not missing, f"numeric settings without a declared range: {missing}"


def test_every_numeric_flag_of_the_other_commands_is_range_checked():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unchecked = [f"{name} {'/'.join(a.option_strings)}" for name, p in sub.choices.items() for a in p._actions
                 if a.type in (int, float)]
    assert not unchecked, f"numeric flags parsed without a range: {unchecked}"
    ranged = {(name, a.option_strings[-1]) for name, p in sub.choices.items() for a in p._actions
              if getattr(a.type, "range", None) is not None}
    assert {("bench", "--repeat"), ("bench", "--threads"), ("derive", "--epoch"), ("derive", "--top-k"),
            ("evaluate", "--max-length"), ("tune", "--trials"), ("analyze", "--batch-size")} <= ranged
    # and every command with such flags checks them before it runs
    for name in {n for n, _ in ranged}:
        assert "_checked" in sub.choices[name].get_default("func").__qualname__, name


def test_declared_ranges_accept_their_bounds():
    """The boundary values a range allows pass the check (the refusals below are not off by one)."""
    for cls in CONFIGS.values():
        for f, kind in _numeric_fields(cls):
            for v in _inside(f.metadata["range"], kind is int):
                C.check_ranges(dataclasses.replace(cls(), **{f.name: kind(v)}))


_CASES = [(name, f.name, kind, v) for name, cls in CONFIGS.items() for f, kind in _numeric_fields(cls)
          for v in _outside(f.metadata["range"], kind is int)]


@pytest.mark.parametrize("command,name,kind,value", _CASES,
                         ids=[f"{c}-{n}-{v}" for c, n, _, v in _CASES])
def test_every_out_of_range_flag_fails_before_the_run_directory(tmp_path, capsys, command, name, kind, value):
    out = tmp_path / "out"
    flag = "--" + name.replace("_", "-")
    assert main([command, flag, str(value), "--out", str(out)]) == 2
    r = dataclasses.fields(CONFIGS[command])
    rng = next(f for f in r if f.name == name).metadata["range"]
    line = _err_line(capsys)
    assert line.startswith(f"naskd {command}: error: setting '{name}' must be {rng.describe(kind is int)}, got "), line
    assert line.endswith("(from command-line flags)")
    assert not out.exists()


# the issue's examples, one by one (the table above covers them too; these read as the issue does)
@pytest.mark.parametrize("argv,message", [
    (["search", "--lr", "nan"], "setting 'lr' must be a finite number > 0, got nan"),
    (["retrain", "--lr", "-0.001"], "setting 'lr' must be a finite number >= 0, got -0.001"),   # 0: score an --init
    (["teacher", "--lr=-1e-5"], "setting 'lr' must be a finite number > 0, got -1e-05"),
    (["retrain", "--dropout", "1.5"], "setting 'dropout' must be a finite number in [0, 1), got 1.5"),
    (["search", "--temperature", "0"], "setting 'temperature' must be a finite number > 0, got 0.0"),
    (["retrain", "--temperature", "-2"], "setting 'temperature' must be a finite number > 0, got -2.0"),
    (["search", "--checkpoint-every", "0"], "setting 'checkpoint_every' must be an integer >= 1, got 0"),
    (["search", "--log-every", "0"], "setting 'log_every' must be an integer >= 1, got 0"),
    (["teacher", "--max-length", "0"], "setting 'max_length' must be an integer >= 8, got 0"),
    (["retrain", "--max-length", "0"], "setting 'max_length' must be an integer >= 8, got 0"),
    (["augment", "--max-length", "0"], "setting 'max_length' must be an integer >= 8, got 0"),
])
def test_issue_examples_of_config_commands(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 2
    line = _err_line(capsys)
    assert f"naskd {argv[0]}: error: {message} (from command-line flags)" == line
    assert not out.exists()


def test_a_bad_number_in_a_config_file_names_the_file(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("temperature: 0\nlr: .nan\n")
    out = tmp_path / "run"
    assert main(["search", "--config", str(f), "--lr", "0.01", "--out", str(out)]) == 2
    assert _err_line(capsys) == (f"naskd search: error: setting 'temperature' must be a finite number > 0, got 0.0 "
                                 f"(from config {f})")
    assert main(["search", "--config", str(f), "--temperature", "2", "--out", str(out)]) == 2
    assert _err_line(capsys).endswith(f"'lr' must be a finite number > 0, got nan (from config {f})")
    assert not out.exists()


def test_checkpoint_every_zero_means_epoch_ends_for_teacher_and_retrain_only(tmp_path):
    # teacher and retrain document 0 as "at epoch ends only" (train.fit honours it); search has no such mode
    for cls in (TeacherConfig, RetrainConfig):
        C.check_ranges(dataclasses.replace(cls(), checkpoint_every=0))
        assert "0: " in next(f for f in dataclasses.fields(cls) if f.name == "checkpoint_every").metadata["help"]
    with pytest.raises(NaskdError, match="'checkpoint_every' must be an integer >= 1"):
        C.check_ranges(dataclasses.replace(SearchConfig(), checkpoint_every=0))


_FLAG_CASES = [
    (["evaluate", "--model", "m"], "--batch-size", "0", "an integer >= 1"),
    (["evaluate", "--model", "m"], "--max-length", "0", "an integer >= 8"),
    (["evaluate", "--model", "m"], "--max-length", "7", "an integer >= 8"),
    (["bench", "--model", "m"], "--repeat", "0", "an integer >= 1"),
    (["bench", "--model", "m"], "--threads", "0", "an integer >= 1"),
    (["bench", "--model", "m"], "--threads", "-4", "an integer >= 1"),
    (["bench", "--model", "m"], "--batch-size", "0", "an integer >= 1"),
    (["bench", "--model", "m"], "--latency-examples", "0", "an integer >= 1"),
    (["tune"], "--trials", "0", "an integer >= 1"),
    (["tune"], "--seed", "-1", "an integer in [0, 4,294,967,295]"),
    (["tune"], "--seed", "4294967296", "an integer in [0, 4,294,967,295]"),
    (["derive", "run", "-o", "g.json"], "--epoch", "0", "an integer >= 1"),
    (["derive", "run", "-o", "g.json"], "--top-k", "0", "an integer >= 1"),
    (["derive", "run", "-o", "g.json"], "--max-identity", "-1", "an integer >= 0"),
    (["derive", "run", "-o", "g.json"], "--epoch", "1.5", "an integer >= 1"),
    (["bench", "--model", "m"], "--repeat", "three", "an integer >= 1"),
    (["analyze", "cka", "--model", "m", "--teacher", "t"], "--batch-size", "3", "an integer >= 4"),
    (["analyze", "cka", "--model", "m", "--teacher", "t"], "--max-eval-examples", "0", "an integer >= 1"),
]


@pytest.mark.parametrize("argv,flag,value,what", _FLAG_CASES, ids=[f"{a[0]}{f}={v}" for a, f, v, _ in _FLAG_CASES])
def test_numeric_flags_of_the_other_commands(tmp_path, monkeypatch, capsys, argv, flag, value, what):
    monkeypatch.chdir(tmp_path)
    assert main(argv + [flag, value]) == 2
    assert _err_line(capsys) == f"naskd {argv[0]}: error: {flag} must be {what}, got {value}"
    assert list(tmp_path.iterdir()) == []          # nothing written: no run directory, no output file


SPACE = {"name": "t", "ops": ["conv3", "identity", "lstm", "none"], "aggregators": ["max_pool", "avg_pool"],
         "nodes": 2, "width": 8}


@pytest.fixture()
def search_run(tmp_path):
    """A finished two-epoch search run as `naskd derive` reads it (config.yaml and history.json only): conv3
    and max_pool win after epoch 1, lstm and avg_pool after epoch 2."""
    run = tmp_path / "search"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"layers": 3, "width": None, "top_k": 2,
                                                     "resolved_space": SPACE}))

    def entry(epoch, op, agg):
        w = torch.full((5, 4), 0.1)
        w[:, op] = 0.7
        return {"epoch": epoch, "alphas": {"ops": w.tolist(), "agg": agg, "op_names": SPACE["ops"],
                                           "agg_names": SPACE["aggregators"]}}

    (run / "history.json").write_text(json.dumps([entry(1, 0, [0.9, 0.1]), entry(2, 2, [0.2, 0.8])]))
    return run


def _ops(g):
    return {op for node in g.cell(0) for op, _ in node}


def test_derive_epochs_are_one_based_and_zero_is_not_the_default(search_run, tmp_path, capsys):
    last = derive(search_run)
    assert (_ops(last), last.aggregator, last.layers, last.width) == ({"lstm"}, "avg_pool", 3, 8)
    assert derive(search_run, epoch=2) == last
    first = derive(search_run, epoch=1)
    assert (_ops(first), first.aggregator) == ({"conv3"}, "max_pool")
    with pytest.raises(NaskdError, match="--epoch must be an integer >= 1, got 0"):
        derive(search_run, epoch=0)
    with pytest.raises(NaskdError, match="--epoch 3 is out of range: .* has epochs 1 to 2"):
        derive(search_run, epoch=3)
    # through the command: the range in one line, no file written
    out = tmp_path / "g.json"
    assert main(["derive", str(search_run), "-o", str(out), "--epoch", "0"]) == 2
    assert _err_line(capsys) == "naskd derive: error: --epoch must be an integer >= 1, got 0"
    assert not out.exists()
    assert main(["derive", str(search_run), "-o", str(out), "--epoch", "1"]) == 0
    assert Genotype.load(out) == first


def test_derive_top_k_zero_is_refused_not_the_runs(search_run):
    assert all(len(node) == 2 for node in derive(search_run).cell(0))          # the run's top_k: 2
    assert all(len(node) == 1 for node in derive(search_run, top_k=1).cell(0))
    assert [len(node) for node in derive(search_run, top_k=3).cell(0)] == [2, 3]
    with pytest.raises(NaskdError, match="--top-k must be an integer >= 1, got 0"):
        derive(search_run, top_k=0)
    with pytest.raises(NaskdError, match="--top-k must be between 1 and 3 for 2 nodes, got 4"):
        derive(search_run, top_k=4)
    with pytest.raises(NaskdError, match="--max-identity must be an integer >= 0, got -1"):
        derive(search_run, max_identity=-1)
    with pytest.raises(NaskdError, match="--epoch must be an integer >= 1, got 1.0"):
        derive(search_run, epoch=1.0)


@pytest.mark.parametrize("change,message", [
    ({"layers": 0}, "'layers' must be an integer >= 1, got 0"),
    ({"cells": [[[["conv3", 0.5]], [["conv3", 1]]]]}, "input index must be an integer >= 0, got 0.5"),
    ({"cells": [[[["conv3", 0]], []]]}, "has no edges"),
])
def test_retrain_refuses_a_malformed_genotype_before_any_work(tmp_path, capsys, change, message):
    g = {"format": 1, "space": "t", "ops": ["conv3", "identity", "none"], "aggregators": ["max_pool"],
         "nodes": 2, "layers": 1, "width": 16, "cells": [[[["conv3", 0]], [["identity", 2]]]],
         "aggregator": "max_pool", **change}
    f = tmp_path / "g.json"
    f.write_text(json.dumps(g))
    out = tmp_path / "run"
    assert main(["retrain", "--genotype", str(f), "--teacher", str(tmp_path / "no-teacher"), "--data-dir",
                 str(DATA), "--out", str(out)]) == 2
    line = _err_line(capsys)
    assert line.startswith(f"naskd retrain: error: {f} is not a valid genotype") and message in line, line
    assert not out.exists()


@pytest.mark.parametrize("kd,message", [
    ("soft_ce=inf,hard_ce=0.5", "criterion soft_ce: weight must be a finite number >= 0, got inf"),
    ("soft_ce=nan", "criterion soft_ce: weight must be a finite number >= 0, got nan"),
    ("soft_ce=-1,hard_ce=1", "criterion soft_ce: weight must be a finite number >= 0, got -1"),
    ("soft_ce=0,hard_ce=0", "--kd weights are all 0"),
])
def test_numbers_inside_the_kd_setting(tmp_path, capsys, kd, message):
    out = tmp_path / "run"
    assert main(["search", "--kd", kd, "--out", str(out)]) == 2
    assert message in _err_line(capsys)
    assert not out.exists()


def test_pkd_pairs_must_be_pairs_of_integers():
    from naskd.distill import parse_pairs

    assert parse_pairs("2:2,4:4") == [(2, 2), (4, 4)]
    for text in ("2:2:2", "2", "1.5:2", "a:b"):
        with pytest.raises(NaskdError, match="expects student:teacher pairs of integers"):
            parse_pairs(text)


@pytest.mark.parametrize("line,message", [
    ("nodes: 2.5", "'nodes' must be an integer >= 1, got 2.5"),
    ("nodes: true", "'nodes' must be an integer >= 1, got True"),
    ("width: 0", "width must be an integer >= 1, got 0"),
    ("nodes: 0", "nodes must be at least 1, got 0"),
])
def test_search_space_numbers(tmp_path, line, message):
    from naskd.space import load_space

    f = tmp_path / "s.yaml"
    f.write_text(f"name: s\nops: [conv3, identity]\naggregators: [max_pool]\n{line}\n")
    with pytest.raises(NaskdError, match=message):
        load_space(str(f))


def test_tune_refuses_a_malformed_genotype_before_any_trial(tmp_path, capsys):
    f = tmp_path / "list.json"
    f.write_text("[1, 2, 3]")
    out = tmp_path / "tune"
    assert main(["tune", "--genotype", str(f), "--teacher", str(tmp_path / "no-teacher"), "--data-dir", str(DATA),
                 "--trials", "1", "--out", str(out)]) == 2
    assert _err_line(capsys) == (f"naskd tune: error: {f} is not a valid genotype: it holds a JSON array, not an "
                                 "object of space, ops, nodes, layers, width, cells (as `naskd search` writes "
                                 "genotype.json)")
    assert not out.exists()
