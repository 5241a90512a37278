"""Run configuration: dataclass defaults, then YAML files, then command-line flags.

Each command has one dataclass. :func:`resolve` merges layers of plain dicts onto it, rejecting unknown
keys (listing the known ones) and coercing values to the declared types, so a typo in a YAML file or a
flag fails when the configuration is read, before any work starts. :func:`add_arguments` turns the same
dataclass into argparse flags whose help shows each default.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError


def field(default: Any = dataclasses.MISSING, *, help: str = "", flag: bool = True, choices=None, **kw):
    """A dataclass field carrying its command-line help (``flag=False`` keeps it out of argparse)."""
    meta = {"help": help, "flag": flag, "choices": choices}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
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
    """Merge dict layers (later wins) onto the dataclass defaults; validate names and types."""
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
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
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices") if f.metadata else None
        if choices and f.name in values and values[f.name] not in choices:
            raise ConfigError(f"setting '{f.name}' must be one of {', '.join(map(str, choices))}, got {values[f.name]!r}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


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
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        if choices:
            kw["choices"] = [str(c) for c in choices]
        parser.add_argument(flag, metavar=f.name.upper() if not choices else None,
                            help=f"{helptext} (default: {shown})", **kw)
