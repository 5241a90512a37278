import argparse
from dataclasses import dataclass
from typing import Optional

import pytest

from naskd import config as C
from naskd.errors import ConfigError


@dataclass
class Demo:
    epochs: int = C.field(3, help="epochs")
    lr: float = C.field(1e-3, help="lr")
    name: Optional[str] = C.field(None, help="name")
    layers: list[int] = C.field([1, 2], help="layers")
    flag: bool = C.field(False, help="flag")
    mode: str = C.field("a", help="mode", choices=["a", "b"])


def test_layers_override_in_order():
    cfg = C.resolve(Demo, {"epochs": 5}, {"epochs": "7", "lr": "0.1"})
    assert cfg.epochs == 7 and cfg.lr == 0.1 and cfg.layers == [1, 2]


def test_unknown_key_lists_known_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch'.*did you mean epochs.*known settings"):
        C.resolve(Demo, {"epoch": 3})


def test_type_errors():
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        C.resolve(Demo, {"epochs": "three"})
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        C.resolve(Demo, {"epochs": 2.5})
    with pytest.raises(ConfigError, match="'flag' expects bool"):
        C.resolve(Demo, {"flag": "maybe"})
    with pytest.raises(ConfigError, match="'mode' must be one of a, b"):
        C.resolve(Demo, {"mode": "c"})


def test_lists_optional_bools():
    cfg = C.resolve(Demo, {"layers": "3,4", "name": "none", "flag": "yes"})
    assert cfg.layers == [3, 4] and cfg.name is None and cfg.flag is True


def test_yaml_and_argparse(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 9\n")
    assert C.load_yaml(f) == {"epochs": 9}
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        C.load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        C.load_yaml(tmp_path / "missing.yaml")
    p = argparse.ArgumentParser()
    C.add_arguments(p, Demo)
    ns = vars(p.parse_args(["--lr", "0.5", "--flag"]))
    assert ns == {"lr": "0.5", "flag": True}  # unset flags stay out, so lower layers win
    assert "(default: 3)" in p.format_help()


@dataclass
class Ranged:
    epochs: int = C.field(3, help="epochs", low=1)
    lr: float = C.field(1e-3, help="lr", low=0, low_open=True)
    dropout: float = C.field(0.1, help="dropout", low=0, high=1, high_open=True)
    every: int = C.field(0, help="0: never", low=0)
    limit: Optional[int] = C.field(None, help="limit", low=1)
    scale: float = C.field(1.0, help="any finite number")


@pytest.mark.parametrize("settings,message", [
    ({"lr": "nan"}, "setting 'lr' must be a finite number > 0, got nan"),
    ({"lr": "-0.1"}, "setting 'lr' must be a finite number > 0, got -0.1"),
    ({"lr": 0}, "setting 'lr' must be a finite number > 0, got 0.0"),
    ({"dropout": 1.5}, r"setting 'dropout' must be a finite number in \[0, 1\), got 1.5"),
    ({"dropout": 1}, r"'dropout' must be a finite number in \[0, 1\), got 1.0"),
    ({"dropout": "-inf"}, r"'dropout' must be a finite number in \[0, 1\), got -inf"),
    ({"epochs": 0}, "setting 'epochs' must be an integer >= 1, got 0"),
    ({"every": -1}, "setting 'every' must be an integer >= 0, got -1"),
    ({"limit": "0"}, "setting 'limit' must be an integer >= 1, got 0"),
    ({"scale": "inf"}, "setting 'scale' must be a finite number, got inf"),   # floats: finite without a range
    ({"scale": "NaN"}, "setting 'scale' must be a finite number, got nan"),
])
def test_declared_ranges_refuse_with_the_range_in_the_message(settings, message):
    with pytest.raises(ConfigError, match=message):
        C.resolve(Ranged, settings)


def test_range_bounds_and_the_source_of_the_value():
    cfg = C.resolve(Ranged, {"epochs": 1, "lr": 5e-324, "dropout": 0.0, "every": 0, "limit": "none", "scale": -3})
    assert (cfg.epochs, cfg.dropout, cfg.every, cfg.limit, cfg.scale) == (1, 0.0, 0, None, -3.0)
    assert C.resolve(Ranged, {"dropout": 0.999999}).dropout == 0.999999
    # the message names the layer the bad value came from, and a later layer can repair it
    with pytest.raises(ConfigError, match=r"got 0 \(from config c.yaml\)"):
        C.resolve(Ranged, {"epochs": 0}, {"lr": 1}, source_names=["config c.yaml", "command-line flags"])
    assert C.resolve(Ranged, {"epochs": 0}, {"epochs": 2}).epochs == 2


def test_defaults_are_checked_too():
    @dataclass
    class Wrong:
        n: int = C.field(0, help="n", low=1)

    with pytest.raises(ConfigError, match="setting 'n' must be an integer >= 1, got 0"):
        C.resolve(Wrong)


def test_range_object_and_help():
    r = C.Range(0, 1, low_open=True, high_open=True)
    assert r.describe(integer=False) == "a finite number in (0, 1)"
    assert [r.contains(v) for v in (0.0, 0.5, 1.0, float("nan"))] == [False, True, False, False]
    assert C.Range(high=10).describe(integer=True) == "an integer <= 10"
    assert C.SEED.describe(integer=True) == "an integer in [0, 4,294,967,295]"
    with pytest.raises(TypeError, match="not both"):
        C.field(1, range=C.SEED, low=0)
    p = argparse.ArgumentParser()
    C.add_arguments(p, Ranged)
    text = " ".join(p.format_help().split())
    assert "(default: 0.1; in [0, 1))" in text and "(default: 3; >= 1)" in text


def test_ranged_flags_are_checked_when_the_command_runs():
    p = argparse.ArgumentParser(prog="naskd bench")
    p.add_argument("--repeat", type=C.ranged(int, 1), default=3)
    p.add_argument("--ratio", type=C.ranged(float, 0, 1, high_open=True), default=None)
    args = p.parse_args(["--repeat", "1", "--ratio", "0"])
    C.check_flags(p, args)
    assert (args.repeat, args.ratio) == (1, 0.0)
    C.check_flags(p, p.parse_args([]))               # defaults, and an unset optional flag
    for argv, message in [(["--repeat", "0"], "--repeat must be an integer >= 1, got 0"),
                          (["--repeat", "2.5"], "--repeat must be an integer >= 1, got 2.5"),
                          (["--repeat", "many"], "--repeat must be an integer >= 1, got many"),
                          (["--ratio", "nan"], "--ratio must be a finite number in [0, 1), got nan"),
                          (["--ratio", "1"], "--ratio must be a finite number in [0, 1), got 1.0")]:
        with pytest.raises(ConfigError) as e:
            C.check_flags(p, p.parse_args(argv))
        assert str(e.value) == message


@pytest.mark.parametrize("command", ["teacher", "search", "retrain", "augment", "tune", "evaluate", "export",
                                     "bench", "plot", "derive", "analyze"])
def test_help_states_each_default_once(command, capsys):
    """No option reads "(default: None)", and none states its default twice (its help's own rule plus the
    formatter's value)."""
    import re

    from naskd.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "default: None;" not in text
    # each option's help runs from its flag to the next flag
    for chunk in re.split(r" (?=--[a-z][a-z-]+[ ,])", text):
        assert len(re.findall(r"\(default\b|default:", chunk, re.IGNORECASE)) <= 1, chunk
