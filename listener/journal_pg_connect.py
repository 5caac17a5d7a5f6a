"""Connections to the journal database: their parameters and settings, and the /readyz probe."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

CONNECT_TIMEOUT_SECONDS = 3
# A write probe: a transaction id is refused by a read-only or recovering server, and its commit
# goes through the WAL like any write.
PROBE = "SELECT pg_current_xact_id()"
Connection = psycopg.Connection[tuple[Any, ...]]


class PgProbe:
    """Writes to the journal database on demand, on a connection of its own (for /readyz)."""

    def __init__(self, url: str, *, password: str = "") -> None:
        self._conninfo = conninfo(url, password)
        self._lock = threading.Lock()
        self._db: Connection | None = None

    def problem(self) -> str | None:
        """Why the journal cannot be written now (None when a write just committed)."""
        with self._lock:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(self._conninfo)
                    configure(self._db)
                with self._db.transaction():
                    self._db.execute(PROBE)
            except psycopg.Error as exc:
                self._close()
                return f"journal database not writable: {exc}"
        return None

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def close(self) -> None:
        """Release the probe's connection."""
        with self._lock:
            self._close()


def conninfo(url: str, password: str) -> str:
    """``url`` with a connect timeout and the password from the password file, if any."""
    extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    if password:
        extra["password"] = password
    return psycopg.conninfo.make_conninfo(url, **extra)


def configure(connection: Connection) -> None:
    """Per-connection settings: commits durable before they return."""
    connection.execute("SET synchronous_commit = on")
    connection.commit()


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "(invalid URL)"
    return f"{params.get('host', '')}:{params.get('port', '')}/{params.get('dbname', '')}"
