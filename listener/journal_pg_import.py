"""Fill an empty PostgreSQL journal from another journal (migrate-journal's target side).

The schema is created or upgraded first, as a listener starting on the database would. The copy is
then one transaction, holding every journal table locked against writers: it refuses a database that
already holds journal data, and a failure half-way leaves the tables empty. Each table copies the
columns both journals have, by name (so columns added to both schemas later come along), plus the
search keys PostgreSQL keeps beside each instance record. Rows go in the order they were written,
so the instances' ``seq`` follows SQLite's rowid; outbox ids are kept and their sequence moved past
them, so the outbox drains in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from listener.journal_api import JOURNAL_TABLES, JournalError, JournalSource
from listener.journal_pg_connect import Connection, configure, conninfo, safe_url
from listener.journal_pg_schema import ensure_schema
from listener.journal_pg_sql import SEARCH_COLUMNS, search_values


class TargetNotEmpty(JournalError):
    """The database already holds journal data: migrating would mix two journals."""


@dataclass
class ImportReport:
    """What was copied: rows per table, and source columns the target has no place for."""

    rows: dict[str, int] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # "table.column"


def import_journal(url: str, source: JournalSource, *, password: str = "") -> ImportReport:
    """Copy every journal table of ``source`` into the empty journal database at ``url``."""
    where = safe_url(url)
    try:
        with psycopg.connect(conninfo(url, password)) as db:
            configure(db)
            ensure_schema(db, where=where)
            with db.transaction():
                _lock_empty_tables(db, where)
                report = ImportReport()
                for table in JOURNAL_TABLES:
                    report.rows[table] = _copy_table(db, source, table, report)
    except psycopg.Error as exc:
        # The primary message only: DETAIL and CONTEXT may quote a row, patient data included.
        problem = exc.diag.message_primary or next(iter(str(exc).splitlines()), repr(exc))
        raise JournalError(f"journal database {where}: {problem}") from exc
    return report


def _lock_empty_tables(db: Connection, where: str) -> None:
    """Lock the journal tables against writers until commit; refuse any that holds a row."""
    tables = sql.SQL(", ").join(map(sql.Identifier, JOURNAL_TABLES))
    db.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(tables))
    held = [
        table
        for table in JOURNAL_TABLES
        if db.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table))).fetchone()
    ]
    if held:
        raise TargetNotEmpty(
            f"journal database {where} already holds journal data (in {', '.join(held)}):"
            " migrate into a new, empty database"
        )


def _copy_table(db: Connection, source: JournalSource, table: str, report: ImportReport) -> int:
    """Copy one table's shared columns (and derived search keys); return the rows copied."""
    target = _target_columns(db, table)
    available = source.columns(table)
    report.left_out += [f"{table}.{column}" for column in available if column not in target]
    shared = [column for column in available if column in target]
    if not shared:
        return 0
    derived = _derived_columns(table, shared, target)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, [*shared, *derived]))
    )
    count = 0
    with db.cursor() as cursor, cursor.copy(statement) as copy:
        for row in source.rows(table, shared):
            values = list(row)  # COPY's text form: SQLite's 0 and 1 are valid booleans too
            if derived:
                values += _search_keys(dict(zip(shared, row, strict=True)), derived)
            copy.write_row(values)
            count += 1
    _advance_sequences(db, table, shared)
    return count


def _target_columns(db: Connection, table: str) -> set[str]:
    """The columns of ``table`` in the target database."""
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {str(row[0]) for row in rows}


def _derived_columns(table: str, shared: Sequence[str], target: set[str]) -> list[str]:
    """The search-key columns of instances the target has and the source does not."""
    if table != "instances" or "record" not in shared:
        return []
    return [column for column in SEARCH_COLUMNS if column in target and column not in shared]


def _search_keys(row: dict[str, Any], columns: Sequence[str]) -> list[str | None]:
    """The values of the search-key ``columns``, read out of the row's record."""
    keys = dict(zip(SEARCH_COLUMNS, search_values(json.loads(row["record"])), strict=True))
    return [keys[column] for column in columns]


def _advance_sequences(db: Connection, table: str, columns: Sequence[str]) -> None:
    """Move the sequence of each copied serial column past the largest value copied."""
    for column in columns:
        row = db.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
        if row is None or row[0] is None:
            continue
        db.execute(
            sql.SQL("SELECT setval(%s, max({})) FROM {} HAVING max({}) IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(table), sql.Identifier(column)
            ),
            (row[0],),
        )
