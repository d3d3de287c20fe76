"""Declarative run configs: YAML files in `configs/` mapped onto dataclasses, plus `key=value` overrides.

Unknown keys are errors (with the closest valid key suggested), so a typo never silently falls back to a
default. Nested sections are dataclasses; override them with dotted keys: `data.num_frames=17`. A file may
start with `extends: base.yaml` (relative to its folder) to hold only what differs from that file.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from .errors import ConfigError
from .files import write_text

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{where}{key}'.{hint} Valid keys: {', '.join(sorted(valid))}")


def _describe(annotation: Any) -> str:
    """A type as a user reads it: `Optional[int]` is "int or null", `list[float]` is "a list of float"."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join("null" if arg is type(None) else _describe(arg) for arg in args)
    if typing.get_origin(annotation) in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check `value` against a simple annotation; ints are accepted for floats, None for Optionals."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{name}' expects {_describe(annotation)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{name}' expects a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, name) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-7" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if annotation is bool and isinstance(value, str) and value.lower() in YAML11_BOOLEANS:
        return YAML11_BOOLEANS[value.lower()]
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"config key '{name}' expects {annotation.__name__}, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"config key '{name}' expects int, got {value!r}")
    return value


def _section_types(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The field types of dataclass `cls`, once every key of `values` is known to be one of its fields."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {values!r}")
    types = _field_types(cls)
    for key in values:
        if key in types:
            continue
        sections = [name for name, kind in types.items()
                    if dataclasses.is_dataclass(kind) and key in _field_types(kind)]
        if sections:  # a section's key given at the top level, e.g. num_frames for data.num_frames
            raise ConfigError(f"unknown config key '{prefix}{key}': it belongs to a section, "
                              f"'{prefix}{sections[0]}.{key}'")
        raise _unknown_key(key, list(types), prefix)
    return types


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) nested dict; missing keys keep their defaults."""
    types = _section_types(cls, values, prefix)
    kwargs = {}
    for key, value in values.items():
        annotation = types[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = from_dict(annotation, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, annotation, prefix + key)
    return cls(**kwargs)


def check_section(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The keys a user gave for a section of dataclass `cls`, checked (names, types) without building it: for a
    section that lists only what must match something recorded elsewhere."""
    types = _section_types(cls, values, prefix)
    return {key: _coerce(value, types[key], prefix + key) for key, value in values.items()}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[leaf] = value


# YAML 1.1 reads these words as booleans; on the command line they stay words (as in YAML 1.2), so that
# `mixed_precision=no` means "no", and boolean keys accept them (`_coerce`).
YAML11_BOOLEANS = {"yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn `["a=1", "data.root=/x"]` into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key=value (for example max_steps=100)")
        word = raw.strip()
        value = word if word.lower() in YAML11_BOOLEANS else yaml.safe_load(raw) if word else None
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's values over those of the file it `extends:` (a path relative to its own folder)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"config files extend each other in a circle: {' -> '.join(map(str, chain + (path,)))}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {values!r}")
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config file {path}: 'extends' takes the path of another config file, got {base!r}")
    return _merge(_read_file(path.parent / base, chain + (path.resolve(),)), values)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls` <- YAML file at `path` (if any, over the files it extends) <- `key=value` overrides."""
    values = _read_file(Path(path)) if path is not None else {}
    return from_dict(cls, _merge(values, parse_overrides(overrides)))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config next to a run's outputs (atomically), so the run can be reproduced."""
    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
