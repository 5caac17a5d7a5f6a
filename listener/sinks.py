"""Broker-less destinations for finished studies: a directory of JSON files, or standard output.

Both implement :class:`listener.publisher.Publisher`, so the outbox, its order, versions and the
at-least-once rule are the same as with RabbitMQ: the relay removes a message from the outbox only
after :meth:`publish` returned, and ``publish`` returns only once the sink holds the message
durably (a directory: written, fsynced, renamed, directory fsynced; stdout: written and flushed).
A crash between the two re-publishes the same version under the same name with the same content.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from listener.instance_files import fsync_directory
from listener.publisher import CONTENT_TYPE, Message, PublishError

_PRIVATE_DIR, _PRIVATE_FILE = 0o700, 0o600


def envelope(message: Message) -> dict[str, Any]:
    """What an AMQP message carries besides its body, as JSON-ready data."""
    return {
        "message_id": message.message_id,
        "content_type": CONTENT_TYPE,
        "timestamp": message.timestamp,
        "headers": message.headers,
    }


def file_stem(message: Message) -> str:
    """``<StudyInstanceUID>.v<version>``: one name per study version, stable across re-sends."""
    study_uid = str(message.headers["study_instance_uid"])
    version = int(message.headers["resource_version"])
    return f"{study_uid}.v{version}"


class DirectorySink:
    """One ``<uid>.v<N>.json`` (the ImagingStudy) and ``<uid>.v<N>.headers.json`` per version.

    The headers file is made durable first, so whoever sees a resource file finds its headers.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._ready = False

    @property
    def connected(self) -> bool:
        """True once the directory exists and the last write to it succeeded."""
        return self._ready

    def connect(self) -> None:
        """Create the directory if needed, or raise PublishError."""
        if self._ready:
            return
        try:
            self._directory.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
            if not os.access(self._directory, os.W_OK | os.X_OK):
                raise PermissionError(f"{self._directory} is not writable")
        except OSError as exc:
            raise PublishError(f"cannot use output directory: {exc}") from exc
        self._ready = True

    def publish(self, message: Message) -> None:
        """Write the headers, then the resource, each durably under its final name."""
        self.connect()
        stem = file_stem(message)
        headers = json.dumps(envelope(message), sort_keys=True).encode()
        try:
            self._write(f"{stem}.headers.json", headers + b"\n")
            self._write(f"{stem}.json", message.body)
            fsync_directory(self._directory)
        except OSError as exc:
            self._ready = False
            raise PublishError(f"cannot write to the output directory: {exc}") from exc

    def _write(self, name: str, data: bytes) -> None:
        """Temporary file, fsync, rename: the final name only ever holds whole content."""
        descriptor, temporary = tempfile.mkstemp(dir=self._directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, _PRIVATE_FILE)
            os.replace(temporary, self._directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def idle(self, seconds: float) -> None:
        """Nothing to keep alive."""

    def reachable(self) -> bool:
        """True when the directory (or the parent it would be created in) can be written."""
        return writable_directory(self._directory)

    def close(self) -> None:
        """Nothing to release; the next connect checks the directory again."""
        self._ready = False


class StdoutSink:
    """One JSON line per study version: the envelope with the resource under ``resource``.

    Logs go to stderr, so standard output stays machine-readable (e.g. piped into ``jq``).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._ready = True

    @property
    def connected(self) -> bool:
        """False after a write failed (e.g. the reader of a pipe went away)."""
        return self._ready

    def connect(self) -> None:
        """Nothing to open; a stream that failed stays failed until the process restarts."""
        if not self._ready:
            raise PublishError("standard output is closed")

    def publish(self, message: Message) -> None:
        """Write one line and flush it."""
        self.connect()
        line = {**envelope(message), "resource": json.loads(message.body)}
        stream = self._stream or sys.stdout
        try:
            stream.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            self._ready = False
            raise PublishError(f"cannot write to standard output: {exc}") from exc

    def idle(self, seconds: float) -> None:
        """Nothing to keep alive."""

    def reachable(self) -> bool:
        """Standard output cannot come back once it failed."""
        return self._ready

    def close(self) -> None:
        """Standard output stays open for the process."""


def writable_directory(directory: Path) -> bool:
    """True when ``directory``, or the parent it would be created in, is writable by us."""
    existing = next((path for path in (directory, *directory.parents) if path.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
