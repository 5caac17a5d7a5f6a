"""`dicom-listener migrate-journal`: a site moves its SQLite journal to PostgreSQL, losing none."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
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


@dataclass
class Migration:
    """``dicom-listener migrate-journal`` run in this process on a data_dir and a fresh database."""

    data_dir: Path
    url: str
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        """Exit status, standard output and standard error of ``migrate-journal ARGS``."""
        status = cli.main(["migrate-journal", *args])
        out, err = self.capsys.readouterr()
        return status, out, err

    def with_journal(self) -> Migration:
        """Write :func:`sqlite_journal` into the data_dir first."""
        sqlite_journal(self.data_dir).close()
        return self


@pytest.fixture
def migration(
    tmp_path: Path,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Migration]:
    """A Migration whose data_dir is tmp_path (no journal in it yet)."""
    monkeypatch.setenv("LISTENER_STORAGE__DATA_DIR", str(tmp_path))
    yield Migration(tmp_path, postgres, capsys)


def test_every_table_is_copied_and_the_postgresql_journal_reads_the_same(
    migration: Migration,
) -> None:
    """Pending and published studies, records in reception order, MPPS, stale files and the outbox.

    The outbox keeps its ids and message ids, and a message queued afterwards comes after them.
    The SQLite journal is left unchanged.
    """
    source = migration.with_journal().data_dir / "journal.sqlite3"
    before = source.read_bytes()

    status, out, err = migration.run("--to", migration.url)

    assert status == 0, err
    assert "studies      2" in out and "instances    3" in out and "outbox       1" in out
    assert source.read_bytes() == before
    journal = PgJournal(migration.url)
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
    with psycopg.connect(migration.url) as db:
        assert db.execute("SELECT consumed FROM mpps").fetchall() == [(1,)]  # a column added later


def test_a_database_already_holding_journal_data_is_refused(migration: Migration) -> None:
    """A target with a journal row is left alone: exit 2, one line saying why."""
    target = PgJournal(migration.url)
    target.add_instance(replace(RECORD, study_uid="7.7", sop_instance_uid="7.7.1"), 1.0)
    target.close()

    status, _out, err = migration.with_journal().run("--to", migration.url)

    [line] = err.splitlines()
    assert status == 2
    assert "already holds journal data (in studies, instances)" in line
    with psycopg.connect(migration.url) as db:
        assert db.execute("SELECT study_uid FROM studies").fetchall() == [("7.7",)]
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_a_copy_failing_half_way_leaves_the_database_empty(migration: Migration) -> None:
    """One transaction: studies copied before an instance that cannot be stored are rolled back.

    The line says why without quoting the row (PostgreSQL's detail would show patient data).
    """
    with sqlite3.connect(migration.with_journal().data_dir / "journal.sqlite3") as db:
        # A record without its series.
        db.execute("INSERT INTO instances VALUES ('8.1', '8', '{\"patient_name\": \"DOE\"}', 9)")

    status, _out, err = migration.run("--to", migration.url)

    [line] = err.splitlines()
    assert status == 1 and "nothing copied" in line and "series_uid" in line
    assert "DOE" not in line
    with psycopg.connect(migration.url) as db:
        for table in ("studies", "instances", "mpps", "stale_files", "outbox"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_without_a_journal_or_a_target_nothing_is_done(migration: Migration) -> None:
    """No SQLite journal, no --to or no password file: exit 2; a database not answering: 1."""
    status, _out, err = migration.run("--to", migration.url)
    assert status == 2 and "no journal at" in err
    status, _out, err = migration.with_journal().run()
    assert status == 2 and "needs --to" in err
    absent = str(migration.data_dir / "absent")
    status, _out, err = migration.run("--to", migration.url, "--password-file", absent)
    assert status == 2 and absent in err
    status, _out, err = migration.run("--to", postgres_url("postgres", port=free_port()))
    [line] = err.splitlines()
    assert status == 1 and "nothing copied" in line
    with psycopg.connect(migration.url) as db:
        assert db.execute("SELECT to_regclass('studies')").fetchone() == (None,)


def test_a_column_the_database_has_no_place_for_is_named(migration: Migration) -> None:
    """A column only the SQLite journal has is named on stderr, not dropped unsaid."""
    with sqlite3.connect(migration.with_journal().data_dir / "journal.sqlite3") as db:
        db.execute("ALTER TABLE studies ADD COLUMN priority INTEGER")

    status, _out, err = migration.run("--to", migration.url)

    assert status == 0
    assert "warning: studies.priority is not in the database's schema" in err


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
