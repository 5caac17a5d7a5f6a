"""The SQLite journal: instances, study state and the outbox survive reopening."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from listener.journal import SCHEMA_VERSION, Change, Journal, OutboxMessage, StudyRow
from listener.model import InstanceRecord
from tests.conftest import JournalOpener

RECORD = InstanceRecord(
    study_uid="1.2",
    series_uid="1.2.1",
    sop_instance_uid="1.2.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
)


# The columns claims added to both journals (SQLite schema 5, PostgreSQL schema 2).
CLAIM_COLUMNS = [
    ("studies", "revision"),
    ("studies", "claimed_until"),
    ("studies", "claimed_by"),
    ("mpps", "consumed"),
    ("outbox", "leased_until"),
    ("outbox", "leased_by"),
]


def message(study_uid: str, version: int) -> OutboxMessage:
    return OutboxMessage(
        id=0,
        study_uid=study_uid,
        version=version,
        message_id=f"{study_uid}/v{version}",
        headers={"resource_version": version},
        body=b"{}",
        created_at=1.0,
    )


def test_new_duplicate_and_changed_instances_are_told_apart(open_journal: JournalOpener) -> None:
    """The first record is new, the identical re-send a duplicate, a different one a change."""
    journal = open_journal()

    assert journal.add_instance(RECORD, 1.0).change is Change.NEW
    assert journal.add_instance(RECORD, 2.0).change is Change.DUPLICATE
    assert journal.add_instance(replace(RECORD, instance_number=4), 3.0).change is Change.CHANGED
    assert journal.study_records("1.2") == [replace(RECORD, instance_number=4)]


def test_everything_survives_reopening(open_journal: JournalOpener) -> None:
    """Records, pending studies and outbox messages are there after the journal is reopened."""
    journal = open_journal()
    journal.add_instance(RECORD, 5.0)
    journal.add_instance(replace(RECORD, study_uid="9.9", sop_instance_uid="9.9.1"), 6.0)
    journal.finish_study("9.9", digest="d", message=message("9.9", 1), finished_at=7.0)
    journal.close()

    reopened = open_journal()

    assert [row.study_uid for row in reopened.pending_studies()] == ["1.2"]
    assert reopened.pending_studies()[0].last_received_at == 5.0
    assert reopened.study_records("1.2") == [RECORD]
    outbox = reopened.next_outbox()
    assert outbox is not None and outbox.message_id == "9.9/v1"


def test_outbox_is_drained_in_order_of_finishing(open_journal: JournalOpener) -> None:
    """Messages come out oldest first and leave only when removed."""
    journal = open_journal()
    for uid in ("3", "1", "2"):
        journal.add_instance(replace(RECORD, study_uid=uid, sop_instance_uid=f"{uid}.1"), 1.0)
        journal.finish_study(uid, digest=uid, message=message(uid, 1), finished_at=2.0)

    order = []
    while (next_message := journal.next_outbox()) is not None:
        order.append(next_message.study_uid)
        journal.remove_outbox(next_message.id)

    assert order == ["3", "1", "2"]
    assert journal.outbox_depth() == 0


def test_instance_for_a_published_study_reopens_it(open_journal: JournalOpener) -> None:
    """A new instance of a published study makes it pending again and says so."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    result = journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2"), 3.0)

    assert result.reopened == ("1.2",)
    row = journal.study("1.2")
    assert row is not None and row.state == "pending" and row.version == 1


def test_unchanged_finish_keeps_the_version(open_journal: JournalOpener) -> None:
    """Finishing without a message records the digest but not a new version."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    journal.finish_study("1.2", digest="d", message=None, finished_at=3.0)

    row = journal.study("1.2")
    assert row is not None and (row.state, row.version, row.digest) == ("published", 1, "d")
    assert journal.outbox_depth() == 1


def test_a_journal_from_the_previous_schema_is_upgraded(tmp_path: Path) -> None:
    """A schema-1 journal (no mpps table) opens, keeps its data and gains the new table."""
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.add_instance(RECORD, 1.0)
    journal.close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE mpps")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()

    upgraded = Journal(path)

    assert upgraded.study_records("1.2") == [RECORD]
    assert upgraded.procedure_steps("1.2") == []
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_journal_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """An older release does not touch a journal written by a newer one."""
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    newer.commit()
    newer.close()

    with pytest.raises(RuntimeError, match="schema version"):
        Journal(path)


def test_one_fsync_makes_every_earlier_commit_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: syncing the latest commit covers the earlier ones without another fsync."""
    journal = Journal(tmp_path / "j.sqlite3")
    results = [
        journal.add_instance(replace(RECORD, sop_instance_uid=f"1.2.1.{n}"), 1.0) for n in range(5)
    ]
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    monkeypatch.setattr(os, "fdatasync", counting_fsync)

    journal.make_durable(results[-1].sequence)
    for result in results:
        journal.make_durable(result.sequence)

    assert len(synced) == 1


def test_opened_at_is_the_first_arrival_of_the_pending_period(open_journal: JournalOpener) -> None:
    """A pending study keeps the time it became pending; a re-open after publishing starts anew."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2"), 5.0)
    assert journal.study("1.2") == StudyRow("1.2", "pending", 0, None, 5.0, 1.0, revision=1)

    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=6.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.3"), 9.0)

    [row] = journal.pending_studies()
    assert (row.last_received_at, row.opened_at) == (9.0, 9.0)


def test_a_schema_2_journal_gains_opened_at(tmp_path: Path) -> None:
    """A journal without studies.opened_at opens; its pending studies count from last arrival."""
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2"), 4.0)
    journal.close()
    old = sqlite3.connect(path)
    old.execute("ALTER TABLE studies DROP COLUMN opened_at")
    old.execute("PRAGMA user_version=2")
    old.commit()
    old.close()

    [row] = Journal(path).pending_studies()

    assert (row.last_received_at, row.opened_at) == (4.0, 4.0)


def test_instance_moving_out_of_an_unpublished_study_forgets_that_study(
    open_journal: JournalOpener,
) -> None:
    """Its only instance re-sent under another Study UID: the old study is not left pending."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)

    result = journal.add_instance(replace(RECORD, study_uid="7.7"), 2.0)

    assert result.change is Change.CHANGED and result.emptied == ("1.2",)
    assert journal.study("1.2") is None
    assert [row.study_uid for row in journal.pending_studies()] == ["7.7"]


def test_instance_moving_out_of_a_published_study_keeps_it_published(
    open_journal: JournalOpener,
) -> None:
    """A published study left empty keeps its state and version; nothing re-opens it."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    result = journal.add_instance(replace(RECORD, study_uid="7.7"), 3.0)

    assert result.reopened == () and result.emptied == ("1.2",)
    row = journal.study("1.2")
    assert row is not None and (row.state, row.version) == ("published", 1)


def test_instance_moving_out_of_a_study_with_others_reopens_it(open_journal: JournalOpener) -> None:
    """A published study that keeps other instances is pending again, to publish without it."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2"), 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    result = journal.add_instance(replace(RECORD, study_uid="7.7"), 3.0)

    assert result.reopened == ("1.2",) and result.emptied == ()


def test_settle_if_empty_only_touches_studies_without_records(tmp_path: Path) -> None:
    """A pending study with records stays pending; one without is taken out of pending."""
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(replace(RECORD, study_uid="3.3", sop_instance_uid="3.3.1"), 1.0)
    journal.close()
    legacy = sqlite3.connect(path)  # what a move left behind before schema 3
    legacy.execute("DELETE FROM instances WHERE study_uid = '3.3'")
    legacy.commit()
    legacy.close()
    journal = Journal(path)

    assert journal.settle_if_empty("1.2") is False
    assert journal.settle_if_empty("3.3") is True
    assert [row.study_uid for row in journal.pending_studies()] == ["1.2"]


def test_a_schema_3_journal_is_upgraded_to_the_current_schema(tmp_path: Path) -> None:
    """A schema-3 journal (no stale_files, no claim columns) opens, keeps its rows, gains both."""
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.add_instance(replace(RECORD, file="1.2/1.2.1/1.2.1.1.dcm"), 1.0)
    journal.close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE stale_files")
    for table, column in CLAIM_COLUMNS:
        old.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    old.execute("PRAGMA user_version=3")
    old.commit()
    old.close()

    upgraded = Journal(path)
    upgraded.add_instance(replace(RECORD, series_uid="1.2.9", file="1.2/1.2.9/1.2.1.1.dcm"), 2.0)

    assert SCHEMA_VERSION == 5
    assert upgraded.stale_files() == ["1.2/1.2.1/1.2.1.1.dcm"]
    [row] = upgraded.pending_studies()
    assert row.revision == 1
    assert upgraded.claim_study("1.2", now=3.0, until=9.0) == row
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 5


def test_a_moved_instance_lists_its_old_file_as_stale_until_forgotten(
    open_journal: JournalOpener,
) -> None:
    """Moving to another series names the old file; deleting it is recorded with forget."""
    journal = open_journal()
    journal.add_instance(replace(RECORD, file="a/b/c.dcm"), 1.0)

    result = journal.add_instance(replace(RECORD, series_uid="1.2.2", file="a/x/c.dcm"), 2.0)

    assert result.stale_file == "a/b/c.dcm"
    journal.forget_stale_file("a/b/c.dcm")
    assert journal.stale_files() == []


def test_a_file_written_again_is_no_longer_stale(open_journal: JournalOpener) -> None:
    """An instance moving back to where it was: its file there is live, not to be deleted."""
    journal = open_journal()
    journal.add_instance(replace(RECORD, file="a/b/c.dcm"), 1.0)
    journal.add_instance(replace(RECORD, series_uid="1.2.2", file="a/x/c.dcm"), 2.0)

    result = journal.add_instance(replace(RECORD, file="a/b/c.dcm"), 3.0)

    assert result.stale_file == "a/x/c.dcm"
    assert journal.stale_files() == ["a/x/c.dcm"]


def test_study_records_come_in_order_of_reception(open_journal: JournalOpener) -> None:
    """The most recently received (or re-received) record comes last."""
    journal = open_journal()
    second = replace(RECORD, sop_instance_uid="1.2.1.2")
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(second, 2.0)
    journal.add_instance(replace(RECORD, instance_number=9), 3.0)

    records = journal.study_records("1.2")

    assert [r.sop_instance_uid for r in records] == ["1.2.1.2", "1.2.1.1"]
