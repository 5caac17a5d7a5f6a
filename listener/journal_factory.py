"""Which journal this node uses: SQLite in ``storage.data_dir``, or PostgreSQL at ``database_url``.

Every part of the listener (the service, its readiness probe, the DICOMweb process and the
operator commands) opens the journal here, so one setting moves all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from listener.config import StorageSettings
from listener.journal import Journal
from listener.journal_api import JournalStore
from listener.journal_health import JournalProbe
from listener.journal_pg import PgJournal
from listener.journal_pg_connect import PgProbe

JOURNAL_NAME = "journal.sqlite3"


class JournalHealth(Protocol):
    """A write probe of the journal, used by ``/readyz``."""

    def problem(self) -> str | None:
        """Why the journal cannot be written now (None when a write just succeeded)."""

    def close(self) -> None:
        """Release the probe's connection."""


def journal_path(storage: StorageSettings) -> Path:
    """Where the SQLite journal lives (used when no database_url is set)."""
    return storage.data_dir / JOURNAL_NAME


def database_password(storage: StorageSettings) -> str:
    """The password from ``storage.database_password_file``, or "" (the URL's own, if any)."""
    if not storage.database_password_file:
        return ""
    return Path(storage.database_password_file).read_text(encoding="utf-8").strip()


def open_journal(storage: StorageSettings) -> JournalStore:
    """The journal ``storage`` names; raises JournalError if it cannot be opened."""
    if storage.database_url:
        return PgJournal(storage.database_url, password=database_password(storage))
    return Journal(journal_path(storage))


def open_probe(storage: StorageSettings) -> JournalHealth:
    """A write probe of the journal ``storage`` names, on a connection of its own."""
    if storage.database_url:
        return PgProbe(storage.database_url, password=database_password(storage))
    return JournalProbe(journal_path(storage))
