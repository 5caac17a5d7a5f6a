"""The SQLite journal's health as seen from outside it: a write probe, and what opening it raises.

The probe is a real write: a transaction that stores the header's ``user_version`` back unchanged
and, with ``synchronous=FULL``, fsyncs the WAL. A transaction that writes nothing (``BEGIN
IMMEDIATE; COMMIT``) still succeeds on a read-only, failing or full file system, so it cannot tell.
It uses its own connection, so it never waits behind the service's journal lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from listener.journal_api import JournalError

PROBE_BUSY_TIMEOUT_SECONDS = 5.0

# What opening or first using the journal raises when the disk or file system refuses.
JOURNAL_ERRORS = (sqlite3.Error, JournalError)


class JournalProbe:
    """Writes to the journal on demand to find out whether it can be written now."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def problem(self) -> str | None:
        """Why the journal cannot be written now (None when a write just succeeded)."""
        with self._lock:
            try:
                self._write()
            except sqlite3.Error as exc:
                self._close()
                return f"journal not writable: {exc}"
        return None

    def _write(self) -> None:
        if self._db is None:
            self._db = sqlite3.connect(
                self._path,
                timeout=PROBE_BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.execute("PRAGMA synchronous=FULL")  # the commit fsyncs the WAL
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def close(self) -> None:
        """Release the probe's connection."""
        with self._lock:
            self._close()
