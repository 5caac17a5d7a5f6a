"""What only the PostgreSQL journal has: a shared schema, a server that can go away, the factory."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from listener.config import StorageSettings
from listener.journal import Journal
from listener.journal_api import JournalError, RecordQuery
from listener.journal_factory import database_password, open_journal, open_probe
from listener.journal_pg import PgJournal
from listener.journal_pg_connect import PgProbe
from listener.journal_pg_schema import SCHEMA_VERSION
from tests.support import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    TcpProxy,
    free_port,
    postgres_url,
    wait_for,
)
from tests.unit.test_journal import CLAIM_COLUMNS, RECORD


def test_nodes_starting_at_once_create_the_schema_once(postgres: str) -> None:
    """Several journals opened at the same moment on an empty database all start, on one schema."""
    errors: list[BaseException] = []
    journals: list[PgJournal] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            journals.append(PgJournal(postgres))
        except BaseException as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == [] and len(journals) == 4
    journals[0].add_instance(RECORD, 1.0)
    assert journals[3].study_records("1.2") == [RECORD]
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT version FROM journal_schema").fetchall() == [(SCHEMA_VERSION,)]
    for journal in journals:
        journal.close()


def test_a_schema_from_a_newer_release_is_refused(postgres: str) -> None:
    """An older release does not touch a database whose schema a newer one wrote."""
    PgJournal(postgres).close()
    with psycopg.connect(postgres) as db:
        db.execute("UPDATE journal_schema SET version = %s", (SCHEMA_VERSION + 1,))

    with pytest.raises(JournalError, match="schema version"):
        PgJournal(postgres)


def test_a_schema_1_database_is_upgraded_with_the_claim_columns(postgres: str) -> None:
    """A database written by the first PostgreSQL release gains the claim columns, rows intact."""
    first = PgJournal(postgres)
    first.add_instance(RECORD, 1.0)
    first.close()
    with psycopg.connect(postgres) as db:
        db.execute("DROP INDEX outbox_by_study")
        for table, column in CLAIM_COLUMNS:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE journal_schema SET version = 1")

    upgraded = PgJournal(postgres)
    claimed = upgraded.claim_study("1.2", now=2.0, until=9.0)
    upgraded.close()

    assert claimed is not None and claimed.revision == 0
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT version FROM journal_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_an_unreachable_database_at_start_is_a_journal_error() -> None:
    """Nothing answering at the URL: opening fails with JournalError (one line at start)."""
    with pytest.raises(JournalError, match="unusable"):
        PgJournal(postgres_url("postgres", port=free_port()), timeout=2.0)


def test_losing_the_database_fails_writes_and_readiness_until_it_is_back(postgres: str) -> None:
    """Cut off from PostgreSQL: writes raise JournalError (not 'full'), the probe says why."""
    proxy = TcpProxy(POSTGRES_HOST, POSTGRES_PORT)
    url = postgres.replace(f":{POSTGRES_PORT}/", f":{proxy.port}/")
    journal, probe = PgJournal(url, timeout=1.0), PgProbe(url)
    try:
        assert probe.problem() is None
        proxy.cut()

        with pytest.raises(JournalError) as raised:
            journal.add_instance(RECORD, 1.0)
        assert raised.value.full is False
        assert journal.writable() is False
        assert "journal database not writable" in (probe.problem() or "")

        proxy.restore()
        assert probe.problem() is None
        wait_for(journal.writable, timeout=15, what="the pool reconnects")
        assert journal.add_instance(RECORD, 2.0).change.value == "new"
    finally:
        journal.close()
        probe.close()
        proxy.close()


def test_the_factory_picks_postgresql_when_a_database_url_is_set(
    postgres: str, tmp_path: Path
) -> None:
    """database_url set: journal and probe are PostgreSQL's; empty: SQLite in data_dir."""
    pg_storage = StorageSettings(data_dir=tmp_path, database_url=postgres)
    sqlite_storage = StorageSettings(data_dir=tmp_path)

    journal, probe = open_journal(pg_storage), open_probe(pg_storage)
    local = open_journal(sqlite_storage)

    assert isinstance(journal, PgJournal) and isinstance(probe, PgProbe)
    assert isinstance(local, Journal) and (tmp_path / "journal.sqlite3").exists()
    for closable in (journal, probe, local):
        closable.close()


def test_the_password_comes_from_the_password_file(tmp_path: Path) -> None:
    """storage.database_password_file's content (trimmed) is the password; none means ""."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")

    storage = StorageSettings(database_password_file=str(secret))

    assert database_password(storage) == "s3cret"
    assert database_password(StorageSettings()) == ""


def test_record_keys_are_matched_on_their_own_columns(postgres: str) -> None:
    """A record re-sent with another patient ID is found under the new one only."""
    journal = PgJournal(postgres)
    journal.add_instance(replace(RECORD, patient_id="OLD"), 1.0)
    journal.add_instance(replace(RECORD, patient_id="NEW"), 2.0)

    assert journal.find_records(RecordQuery(patient_id="OLD")) == []
    assert len(journal.find_records(RecordQuery(patient_id="NEW"))) == 1
    journal.close()
