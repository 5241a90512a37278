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
