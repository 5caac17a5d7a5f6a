"""Loading a tree of frozen settings dataclasses from a TOML table and environment overrides.

Generic: it knows nothing of our sections. A field's type decides how a value is read (TOML value
or environment string), its ``check`` metadata whether the value is acceptable, and its ``doc``
metadata what ``describe`` reports. Every error names the key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "LISTENER_"

Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """A setting is missing, unknown or invalid; the message names the key."""


def environment_values(environ: Mapping[str, str], root: type[Any]) -> dict[str, str]:
    """Map ``LISTENER_DICOM__PORT`` to ``dicom.port``; an unknown variable is an error."""
    values = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            values[key] = value
    _reject_unknown(set(values), _known_keys(root, ""), origin="environment variable")
    return values


def _known_keys(cls: type[Any], prefix: str) -> set[str]:
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys |= _known_keys(typing.cast(type[Any], hint), f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _reject_unknown(keys: set[str], known: set[str], *, origin: str) -> None:
    for key in sorted(keys - known):
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        shown = env_name if origin == "environment variable" else key
        raise ConfigError(f"{shown}: unknown {origin} key")


def build(
    cls: type[Any], table: Any, env: dict[str, str], *, prefix: str, sources: dict[str, str]
) -> Any:
    """Build dataclass ``cls`` from a TOML table and env overrides, noting each value's source."""
    section = prefix.rstrip(".") or "top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: must be a table")
    hints = typing.get_type_hints(cls)
    _reject_unknown(
        {f"{prefix}{k}" for k in table}, {f"{prefix}{k}" for k in hints}, origin="config"
    )
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(hint):
            sub = typing.cast(type[Any], hint)
            values[item.name] = build(
                sub, table.get(item.name, {}), env, prefix=f"{key}.", sources=sources
            )
            continue
        if key in env:
            values[item.name] = _coerce(key, hint, env[key], from_env=True)
            sources[key] = "env"
        elif item.name in table:
            values[item.name] = _coerce(key, hint, table[item.name], from_env=False)
            sources[key] = "file"
        else:
            sources[key] = "default"
            continue
        check: Check | None = item.metadata.get("check")
        problem = check(values[item.name]) if check else None
        if problem:
            raise ConfigError(f"{key}: {problem}")
    return cls(**values)


def _coerce(key: str, hint: Any, raw: Any, *, from_env: bool) -> Any:
    """Turn a TOML value or an environment string into ``hint``, or raise naming ``key``."""
    if typing.get_origin(hint) is Literal:
        return _choice(key, typing.get_args(hint), raw)
    if typing.get_origin(hint) is list:
        return _string_list(key, raw, from_env=from_env)
    if typing.get_origin(hint) is dict:
        return _string_table(key, raw, from_env=from_env)
    if hint is bool:
        return _boolean(key, raw, from_env=from_env)
    if hint is int or hint is float:
        return _number(key, hint, raw)
    if not isinstance(raw, str) or (hint is Path and not raw):
        raise ConfigError(f"{key}: must be a {'non-empty path' if hint is Path else 'string'}")
    return Path(raw) if hint is Path else raw


def _choice(key: str, choices: tuple[Any, ...], raw: Any) -> Any:
    if raw not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {raw!r}")
    return raw


def _string_list(key: str, raw: Any, *, from_env: bool) -> list[str]:
    if from_env:
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f'{key}: must be a JSON list, e.g. \'["CT1", "MR2"]\'') from None
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{key}: must be a list of strings")
    return list(raw)


def _string_table(key: str, raw: Any, *, from_env: bool) -> dict[str, str]:
    if from_env:
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(
                f'{key}: must be a JSON object, e.g. \'{{"CT1": "10.0.0.5:104"}}\''
            ) from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{key}: must be a table of strings")
    return {str(k): v for k, v in raw.items()}


def _boolean(key: str, raw: Any, *, from_env: bool) -> bool:
    if (
        from_env
        and isinstance(raw, str)
        and raw.lower() in ("true", "1", "yes", "false", "0", "no")
    ):
        return raw.lower() in ("true", "1", "yes")
    if isinstance(raw, bool):
        return raw
    raise ConfigError(f"{key}: must be true or false, got {raw!r}")


def _number(key: str, hint: type[int] | type[float], raw: Any) -> int | float:
    kind = "an integer" if hint is int else "a number"
    if isinstance(raw, bool):
        raise ConfigError(f"{key}: must be {kind}, got {raw!r}")
    if isinstance(raw, str):
        try:
            raw = hint(raw)
        except ValueError:
            raise ConfigError(f"{key}: must be {kind}, got {raw!r}") from None
    if hint is int and isinstance(raw, int):
        return raw
    if hint is float and isinstance(raw, int | float):
        return float(raw)
    raise ConfigError(f"{key}: must be {kind}, got {raw!r}")


def describe(cls: type[Any], prefix: str = "") -> list[tuple[str, Any, str]]:
    """List ``(key, default, doc)`` for every setting, in declaration order."""
    rows: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            rows += describe(typing.cast(type[Any], hint), f"{prefix}{item.name}.")
        else:
            factory = item.default_factory
            default = item.default if factory is dataclasses.MISSING else factory()
            rows.append((f"{prefix}{item.name}", default, item.metadata["doc"]))
    return rows


def setting_value(settings: Any, key: str) -> Any:
    """The value of a dotted key such as ``dicom.tls.cert_file``."""
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value
