"""Run configuration: dataclass defaults, then YAML files, then command-line flags.

Each command has one dataclass. :func:`resolve` merges layers of plain dicts onto it, rejecting unknown
keys (listing the known ones), coercing values to the declared types and checking every number against
the range its field declares (floats always finite), so a typo or an impossible number in a YAML file or a
flag fails when the configuration is read, before any work starts; zero is never read as "the default".
:func:`add_arguments` turns the same dataclass into argparse flags whose help shows each default and range.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a setting allows: ``low``/``high`` bounds (None: unbounded), each inclusive unless its
    ``*_open`` flag says otherwise. A float must also be finite (NaN and infinities are never allowed)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def bounds(self) -> str:
        """E.g. '> 0', '>= 1', 'in [0, 1)'; '' when unbounded."""
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"in {'(' if self.low_open else '['}{_num(lo)}, {_num(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f"{'>' if self.low_open else '>='} {_num(lo)}"
        if hi is not None:
            return f"{'<' if self.high_open else '<='} {_num(hi)}"
        return ""

    def describe(self, integer: bool) -> str:
        """E.g. 'a finite number > 0', 'an integer >= 1', 'a finite number in [0, 1)'."""
        kind = "an integer" if integer else "a finite number"
        return f"{kind} {self.bounds()}".rstrip()

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, name: str, value: float, integer: bool, source: str | None = None) -> None:
        """Raise :class:`ConfigError` ``setting 'NAME' must be <range>, got VALUE (from SOURCE)`` when
        ``value`` is outside."""
        if not self.contains(value):
            where = f" (from {source})" if source else ""
            raise ConfigError(f"setting '{name}' must be {self.describe(integer)}, got {value!r}{where}")


SEED = Range(0, 2**32 - 1)
"""Seeds: what NumPy's and scikit-learn's generators accept."""
EVERY = Range()
"""No bound beyond finiteness (floats); declare it to say a setting takes any value on purpose."""


def field(default: Any = dataclasses.MISSING, *, help: str = "", flag: bool = True, choices=None,
          low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
          range: Range | None = None, **kw):
    """A dataclass field carrying its command-line help (``flag=False`` keeps it out of argparse) and, for
    numbers, its allowed range: ``low``/``high`` (inclusive unless ``low_open``/``high_open``), or a
    :class:`Range` as ``range``. :func:`resolve` refuses a value outside it, and a float that is NaN or
    infinite whatever the range, naming the range in the message."""
    if range is None and (low is not None or high is not None):
        range = Range(low, high, low_open, high_open)
    elif range is not None and (low is not None or high is not None or low_open or high_open):
        raise TypeError("give range= or low=/high=, not both")
    meta = {"help": help, "flag": flag, "choices": choices, "range": range}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        from .data.readers import read_text

        data = yaml.safe_load(read_text(p, what="config file"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of setting: value, not {type(data).__name__}")
    return data


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or a flag string) to type ``tp`` or raise :class:`ConfigError`."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"setting '{name}' may not be empty")
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(base) or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip() != ""]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [coerce(name, v.strip() if isinstance(v, str) else v, inner) for v in value]
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{name}' expects {_type_name(tp)}, got {value!r}") from None
    return value


def _type_name(tp) -> str:
    base, optional = _unwrap_optional(tp)
    name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


def resolve(cls, *layers: dict | None, source_names: list[str] | None = None):
    """Merge dict layers (later wins) onto the dataclass defaults; validate names, types, choices and each
    number's declared range (:func:`field`), then the dataclass's own ``validate()``. Every failure is a
    :class:`ConfigError`, raised before any work; ``source_names`` name the layers in its message."""
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if not layer:
            continue
        src = source_names[i] if source_names and i < len(source_names) else "settings"
        for k, v in layer.items():
            key = k.replace("-", "_")
            if key not in hints:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(
                    f"unknown setting '{k}' in {src}{hint}; known settings: {', '.join(sorted(known))}"
                )
            values[key] = coerce(key, v, hints[key])
            if source_names and i < len(source_names):
                origin[key] = src
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices") if f.metadata else None
        if choices and f.name in values and values[f.name] not in choices:
            raise ConfigError(f"setting '{f.name}' must be one of {', '.join(map(str, choices))}, got {values[f.name]!r}")
    cfg = cls(**values)
    check_ranges(cfg, hints, origin)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def numeric_kind(tp) -> type | None:
    """int or float when the (optional) type ``tp`` is a number, else None (bool is not a number here)."""
    base, _ = _unwrap_optional(tp)
    return base if base in (int, float) else None


def check_ranges(cfg, hints: dict | None = None, origin: dict[str, str] | None = None) -> None:
    """Every number of the dataclass instance ``cfg`` (defaults included) within its field's declared range;
    every float finite. Raises :class:`ConfigError` naming the setting, the range, the value and, from
    ``origin`` (setting name -> layer name), where the value came from."""
    hints = hints or _hints(type(cfg))
    origin = origin or {}
    for f in dataclasses.fields(cfg):
        kind = numeric_kind(hints[f.name])
        value = getattr(cfg, f.name)
        if kind is None or value is None:
            continue
        rng = (f.metadata or {}).get("range") or EVERY
        rng.check(f.name, value, integer=kind is int, source=origin.get(f.name))


def ranged(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False):
    """An argparse ``type=`` declaring a flag's range, for commands whose flags are not a config dataclass.

    It converts the string to ``kind`` (int or float) and leaves the text as it is when it is not one; the
    range and the type are checked by :func:`check_flags` once the command runs, so a bad number is the
    project's one-line error (``naskd CMD: error: --FLAG must be <range>, got VALUE``, exit status 2), not
    argparse's usage block."""
    rng = Range(low, high, low_open, high_open)

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            return text                       # check_flags names it

    parse.__name__ = kind.__name__
    parse.range, parse.kind = rng, kind
    return parse


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every flag of ``parser`` declared with :func:`ranged` holds a number of its kind within its range
    (NaN and infinities never); raises :class:`ConfigError` naming the flag, the range and the value."""
    for action in parser._actions:
        rng = getattr(action.type, "range", None)
        value = getattr(args, action.dest, None)
        if rng is None or value is None:
            continue
        kind = action.type.kind
        ok = not isinstance(value, str) and not isinstance(value, bool) and isinstance(value, kind)
        if not (ok and rng.contains(value)):
            flag = action.option_strings[-1] if action.option_strings else action.dest
            raise ConfigError(f"{flag} must be {rng.describe(kind is int)}, got {value}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


_STATES_DEFAULT = re.compile(r"\(default\b|default:", re.IGNORECASE)    # a help that says its own default


def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per dataclass field; unset flags stay out of the namespace (SUPPRESS)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or (f.metadata and not f.metadata.get("flag", True)):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        base, _ = _unwrap_optional(hints[f.name])
        helptext = (f.metadata or {}).get("help", "")
        choices = (f.metadata or {}).get("choices")
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                help=f"{helptext} (default: {default})", **kw)
            continue
        # the default said once: not when the help states it (a rule, not a value), nor when there is none
        said = []
        if default is not None and not _STATES_DEFAULT.search(helptext):
            said.append(f"default: {','.join(map(str, default)) if isinstance(default, list) else default}")
        rng = (f.metadata or {}).get("range")
        if rng is not None and rng.bounds():
            said.append(rng.bounds())
        if choices:
            kw["choices"] = [str(c) for c in choices]
        parser.add_argument(flag, metavar=f.name.upper() if not choices else None,
                            help=helptext + (f" ({'; '.join(said)})" if said else ""), **kw)
