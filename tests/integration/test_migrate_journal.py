"""`dicom-listener migrate-journal`: a site moves its SQLite journal to PostgreSQL, losing none."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from listener import cli
from listener.journal import Journal
from listener.journal_api import OutboxMessage
from listener.journal_pg import PgJournal
from listener.mpps import COMPLETED
from tests.conftest import ListenerFactory
from tests.support import PYDICOM_TEST_FILES, AmqpTopology, free_port, postgres_url, storescu
from tests.unit.test_journal import RECORD, message

CT = PYDICOM_TEST_FILES / "CT_small.dcm"
SAME_TIME = replace(RECORD, sop_instance_uid="1.2.1.0")  # received with RECORD, written after it
PUBLISHED = replace(RECORD, study_uid="9.9", series_uid="9.9.1", sop_instance_uid="9.9.1.1")
STEP = {"sop_instance_uid": "5.5", "study_uid": "9.9", "status": COMPLETED}


def migrate(data_dir: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``dicom-listener migrate-journal ARGS`` on ``data_dir`` in this process."""
    monkeypatch.setenv("LISTENER_STORAGE__DATA_DIR", str(data_dir))
    return cli.main(["migrate-journal", *args])


def sqlite_journal(data_dir: Path) -> Journal:
    """A journal holding a pending study, a published one (version 2), an MPPS and a stale file."""
    journal = Journal(data_dir / "journal.sqlite3")
    journal.add_instance(replace(PUBLISHED, file="old/9.9.1.1"), 1.0)
    journal.add_instance(replace(PUBLISHED, file="new/9.9.1.1"), 1.5)  # moved: old file stale
    journal.save_procedure_step(STEP, {"00400252": {"vr": "CS"}}, now=1.8)
    journal.finish_study(
        "9.9", digest="d1", message=message("9.9", 1), finished_at=2.0, consumed_steps=["5.5"]
    )
    journal.remove_outbox(1)  # confirmed by the broker
    journal.queue_republication(message("9.9", 2))
    journal.add_instance(RECORD, 5.0)
    journal.add_instance(SAME_TIME, 5.0)
    return journal


def test_every_table_is_copied_and_the_postgresql_journal_reads_the_same(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pending and published studies, records in reception order, MPPS, stale files and the outbox.

    The outbox keeps its ids and message ids, and a message queued afterwards comes after them.
    The SQLite journal is left unchanged.
    """
    sqlite_journal(tmp_path).close()
    before = (tmp_path / "journal.sqlite3").read_bytes()

    status = migrate(tmp_path, "--to", postgres, monkeypatch=monkeypatch)

    assert status == 0, capsys.readouterr().err
    output = capsys.readouterr().out
    assert "studies      2" in output and "instances    3" in output and "outbox       1" in output
    assert (tmp_path / "journal.sqlite3").read_bytes() == before
    journal = PgJournal(postgres)
    try:
        [pending] = journal.pending_studies()
        assert (pending.study_uid, pending.last_received_at, pending.opened_at) == ("1.2", 5.0, 5.0)
        assert journal.study_records("1.2") == [RECORD, SAME_TIME]
        published = journal.study("9.9")
        assert published is not None
        assert (published.state, published.version, published.digest) == ("published", 2, "d1")
        assert journal.study_records("9.9") == [replace(PUBLISHED, file="new/9.9.1.1")]
        assert journal.procedure_step("5.5") == (STEP, {"00400252": {"vr": "CS"}})
        assert journal.stale_files() == ["old/9.9.1.1"]
        queued = journal.next_outbox()
        assert queued is not None and (queued.id, queued.message_id) == (2, "9.9/v2")
        assert queued.body == b"{}" and queued.headers == {"resource_version": 2}
        journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=6.0)
        journal.remove_outbox(queued.id)
        following = journal.next_outbox()
        assert following is not None and following.id > 2 and following.message_id == "1.2/v1"
    finally:
        journal.close()
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT consumed FROM mpps").fetchall() == [(1,)]  # a column added later


def test_a_database_already_holding_journal_data_is_refused(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A target with a journal row is left alone: exit 2, one line saying why."""
    sqlite_journal(tmp_path).close()
    target = PgJournal(postgres)
    target.add_instance(replace(RECORD, study_uid="7.7", sop_instance_uid="7.7.1"), 1.0)
    target.close()

    status = migrate(tmp_path, "--to", postgres, monkeypatch=monkeypatch)

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert "already holds journal data (in studies, instances)" in line
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT study_uid FROM studies").fetchall() == [("7.7",)]
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_a_copy_failing_half_way_leaves_the_database_empty(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One transaction: studies copied before an instance that cannot be stored are rolled back.

    The line says why without quoting the row (PostgreSQL's detail would show patient data).
    """
    sqlite_journal(tmp_path).close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:  # a record without its series
        db.execute("INSERT INTO instances VALUES ('8.1', '8', '{\"patient_name\": \"DOE\"}', 9)")

    status = migrate(tmp_path, "--to", postgres, monkeypatch=monkeypatch)

    [line] = capsys.readouterr().err.splitlines()
    assert status == 1 and "nothing copied" in line and "series_uid" in line
    assert "DOE" not in line
    with psycopg.connect(postgres) as db:
        for table in ("studies", "instances", "mpps", "stale_files", "outbox"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_without_a_journal_or_a_target_nothing_is_done(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No SQLite journal in data_dir or no --to: exit 2; a database that does not answer: 1."""
    assert migrate(tmp_path, "--to", postgres, monkeypatch=monkeypatch) == 2
    assert "no journal at" in capsys.readouterr().err
    sqlite_journal(tmp_path).close()
    assert migrate(tmp_path, monkeypatch=monkeypatch) == 2
    assert "needs --to" in capsys.readouterr().err
    nowhere = postgres_url("postgres", port=free_port())
    assert migrate(tmp_path, "--to", nowhere, monkeypatch=monkeypatch) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "nothing copied" in line
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT to_regclass('studies')").fetchone() == (None,)


def test_a_listener_started_on_the_migrated_database_publishes_what_was_left(
    start_listener: ListenerFactory, amqp: AmqpTopology, postgres: str, tmp_path: Path
) -> None:
    """Stopped with a pending study and an unconfirmed message, restarted on PostgreSQL: both go."""
    sqlite_listener = start_listener(quiet_period=600)
    assert storescu(sqlite_listener.port, [CT]).succeeded == [CT]
    assert sqlite_listener.stop() == 0
    journal = Journal(tmp_path / "data" / "journal.sqlite3")
    queued = OutboxMessage(0, "7.7", 1, "7.7/v1", {"resource_version": 1}, b'{"id": "7.7"}', 1.0)
    journal.finish_study("7.7", digest="d", message=queued, finished_at=1.0)
    journal.close()

    migrated = sqlite_listener.cli("migrate-journal", "--to", postgres)
    assert migrated.returncode == 0, migrated.stderr
    start_listener(LISTENER_STORAGE__DATABASE_URL=postgres)

    messages = amqp.drain(2, timeout=30)
    by_id = {received.properties.message_id: received for received in messages}
    assert by_id.pop("7.7/v1").body == b'{"id": "7.7"}'
    [published] = by_id.values()
    assert published.resource["numberOfInstances"] == 1
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT state FROM studies WHERE study_uid <> '7.7'").fetchall() == [
            ("published",)
        ]


def test_a_column_the_database_has_no_place_for_is_named(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A column only the SQLite journal has is named on stderr, not dropped unsaid."""
    sqlite_journal(tmp_path).close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        db.execute("ALTER TABLE studies ADD COLUMN priority INTEGER")

    assert migrate(tmp_path, "--to", postgres, monkeypatch=monkeypatch) == 0
    assert "warning: studies.priority is not in the database's schema" in capsys.readouterr().err
