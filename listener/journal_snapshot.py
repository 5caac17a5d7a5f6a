"""A consistent, read-only view of the SQLite journal's tables: the source of migrate-journal.

Every read runs in one SQLite read transaction, so the copy is a snapshot even if another process
writes meanwhile (WAL readers never block writers, nor wait for them). The file is opened read-only:
migrating never changes the SQLite journal.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from listener.journal import SCHEMA_VERSION
from listener.journal_api import JournalError

BUSY_TIMEOUT_MILLISECONDS = 10000


class SqliteSnapshot:
    """The tables of an SQLite journal as of the start of one read transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def columns(self, table: str) -> tuple[str, ...]:
        """The columns ``table`` has in this journal (none if an older journal lacks it)."""
        return tuple(row[1] for row in self._db.execute(f'PRAGMA table_info("{table}")'))

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """The values of ``columns`` in each row of ``table``, in the order they were written.

        The order is the rowid's, which is the outbox id and breaks ties between instances
        received at the same time, as :meth:`listener.journal.Journal.study_records` does.
        """
        names = ", ".join(f'"{column}"' for column in columns)
        yield from self._db.execute(f'SELECT {names} FROM "{table}" ORDER BY rowid')


@contextlib.contextmanager
def sqlite_snapshot(path: Path) -> Iterator[SqliteSnapshot]:
    """The journal at ``path`` read in one transaction; JournalError if it cannot be read.

    Raises FileNotFoundError when there is no journal at ``path``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no journal at {path}: check storage.data_dir")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from exc
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MILLISECONDS}")
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {path} has schema version {version}; this release reads {SCHEMA_VERSION}"
            )
        yield SqliteSnapshot(db)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from exc
    finally:
        db.close()
