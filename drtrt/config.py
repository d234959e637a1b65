"""Frozen dataclasses to plain dicts and back: the one parser of dicts into dataclasses.

Every configuration and every record drtrt reads back (training configs, preprocessing,
geometry, the task vocabulary, engine manifests) is a frozen dataclass; this is the one place
that turns them into JSON/YAML-ready dicts and validates dicts coming back. Unknown keys are an
error that lists the valid ones (with a close match), never silently ignored; values are
coerced to the annotated type where that is lossless (lists to tuples, ints to floats, the
elements of typed tuples, nested dataclasses) and refused otherwise.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from drtrt.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass → dict (recursively); tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take their defaults.

    ``where`` prefixes key names in messages (``"model."``). Raises :class:`ConfigError` for
    unknown keys (with a close-match suggestion), missing required keys and values of the
    wrong type; the dataclass's own ``__post_init__`` checks run as usual.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or cls.__name__} must be a mapping, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{where}{key}'{hint}; valid keys: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where.rstrip('.') or cls.__name__}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        custom = hint.__dict__.get("from_dict")   # a class's own from_dict (it may call this module)
        if isinstance(custom, classmethod):
            return hint.from_dict(value)
        return from_dict(hint, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}' must be a list, found {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"config key '{where}' must hold {len(args)} values, found {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))) if args else tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, found {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{where}' must be {hint.__name__}, found {value!r}")
    return value
