"""``dicom-listener migrate-journal``: move a site's SQLite journal into PostgreSQL.

Everything the journal holds comes along (pending studies, published studies with their versions
and digests, instance records in reception order, MPPS, stale files and the outbox, unconfirmed
messages with their message ids), so a listener started with ``storage.database_url`` set to the
target finishes the pending studies and publishes the outbox. Stop the listener first: what it
writes to SQLite after the snapshot is read would not be copied.
"""

from __future__ import annotations

from pathlib import Path

from listener.config import StorageSettings
from listener.journal_factory import database_password, journal_path
from listener.journal_pg_connect import safe_url
from listener.journal_pg_import import ImportReport, TargetNotEmpty, import_journal
from listener.journal_snapshot import sqlite_snapshot

__all__ = ["REFUSALS", "ImportReport", "TargetNotEmpty", "migrate_journal", "summary", "warnings"]

# Raised before anything is written: no SQLite journal, an unreadable password file, a target
# that already holds journal data.
REFUSALS = (OSError, TargetNotEmpty)


def migrate_journal(
    storage: StorageSettings, url: str, *, password_file: Path | None = None
) -> ImportReport:
    """Copy the SQLite journal of ``storage`` into the empty journal database at ``url``.

    The password comes from ``password_file``, else from ``storage.database_password_file``, else
    from the URL. Raises one of REFUSALS, or JournalError when either journal cannot be read or
    written (the target is then left without journal data).
    """
    if password_file is not None:
        password = password_file.read_text(encoding="utf-8").strip()
    else:
        password = database_password(storage)
    with sqlite_snapshot(journal_path(storage)) as source:
        return import_journal(url, source, password=password)


def summary(storage: StorageSettings, url: str, report: ImportReport) -> list[str]:
    """What was copied, one line per table, and what to do next."""
    width = max(len(table) for table in report.rows)
    return [
        f"copied {journal_path(storage)} to {safe_url(url)}:",
        *(f"  {table.ljust(width)}  {count}" for table, count in report.rows.items()),
        "next: set storage.database_url to that URL and start the listener",
    ]


def warnings(report: ImportReport) -> list[str]:
    """Columns of the SQLite journal the database has no place for (a newer SQLite schema)."""
    return [f"{column} is not in the database's schema: not copied" for column in report.left_out]
