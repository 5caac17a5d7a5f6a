"""What ``check-config`` prints: the effective settings as TOML, and warnings about the host.

The settings come out as dotted TOML keys (``dicom.port = 11112  # default``), so the output
parses as TOML and can be pasted back into a config file. The warnings check what only the host
can tell: whether the ports can be bound, ``storage.data_dir`` written and the broker reached.
They are warnings, not errors: the listener may be running already, or the broker start later.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from listener.config import Settings, describe, mask_url, setting_value
from listener.sinks import writable_directory

_MB = 1024 * 1024
BROKER_TIMEOUT_SECONDS = 2.0
_SECRET_KEYS = {"amqp.url"}


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # JSON's string escapes are TOML's; TOML also wants DEL escaped.
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007F")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_value(str(key))} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def settings_lines(settings: Settings, sources: dict[str, str]) -> list[str]:
    """One ``key = value  # source`` line per setting; the broker password masked."""
    lines = []
    for key, _default, _doc in describe():
        value = setting_value(settings, key)
        shown = mask_url(value) if key in _SECRET_KEYS else value
        lines.append(f"{key} = {toml_value(shown)}  # {sources[key]}")
    return lines


def host_warnings(settings: Settings) -> list[str]:
    """Problems the host would cause at start: busy ports, unwritable directories, no broker."""
    checks: list[str | None] = [
        port_problem("dicom.port", settings.dicom.host, settings.dicom.port)
    ]
    if settings.metrics.enabled:
        metrics = settings.metrics
        checks.append(port_problem("metrics.port", metrics.host, metrics.port))
    if settings.dicomweb.enabled:
        dicomweb = settings.dicomweb
        checks.append(port_problem("dicomweb.port", dicomweb.host, dicomweb.port))
    checks.append(data_dir_problem(settings))
    if settings.output.kind == "amqp":  # no broker is used otherwise
        checks.append(broker_problem(settings.amqp.url))
    elif settings.output.kind == "directory":
        checks.append(output_directory_problem(Path(settings.output.directory)))
    return [problem for problem in checks if problem]


def output_directory_problem(directory: Path) -> str | None:
    """Why ImagingStudy files could not be written to ``directory`` (it is created if missing)."""
    if not writable_directory(directory):
        return f"output.directory: {directory} cannot be created or written"
    return None


def port_problem(key: str, host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now (in use, or not an address of this host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            probe.bind((host, port))
    except OSError as exc:
        return f"{key}: cannot bind {host}:{port}: {exc.strerror or exc}"
    return None


def data_dir_problem(settings: Settings) -> str | None:
    """Why ``storage.data_dir`` cannot be created or written, or is below the disk reserve."""
    data_dir = settings.storage.data_dir
    existing = next(p for p in (data_dir, *data_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"storage.data_dir: {data_dir} cannot be created: {existing} is not a directory"
    try:
        if existing == data_dir:
            with tempfile.TemporaryFile(dir=data_dir):
                pass  # created, written and removed: a real write
        elif not os.access(existing, os.W_OK):
            raise PermissionError(f"{existing} is not writable")
        free_mb = shutil.disk_usage(existing).free // _MB
    except OSError as exc:
        return f"storage.data_dir: {data_dir} is not writable: {exc.strerror or exc}"
    if free_mb < settings.storage.min_free_mb:
        return (
            f"storage.data_dir: {free_mb} MB free, below storage.min_free_mb"
            f" ({settings.storage.min_free_mb}): every C-STORE would be refused"
        )
    return None


def broker_problem(url: str) -> str | None:
    """Why the broker's TCP port does not answer (no login is tried)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((host, port), timeout=BROKER_TIMEOUT_SECONDS):
            return None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return (
            f"amqp.url: broker {host}:{port} not reachable: {reason} (messages wait in the outbox)"
        )
