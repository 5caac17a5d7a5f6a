"""The rest of the JournalStore contract, checked on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
from dataclasses import replace

from listener.journal_api import Change, RecordQuery
from tests.conftest import JournalOpener
from tests.unit.test_journal import RECORD, message

OTHER_PATIENT = replace(
    RECORD,
    study_uid="4.4",
    series_uid="4.4.1",
    sop_instance_uid="4.4.1.1",
    patient_id="P2",
    accession_number="A2",
)


def test_find_records_matches_every_given_key_exactly(open_journal: JournalOpener) -> None:
    """Each key of a RecordQuery narrows the search; no key returns every record."""
    journal = open_journal()
    first = replace(RECORD, patient_id="P1", accession_number="A1")
    journal.add_instance(first, 1.0)
    journal.add_instance(OTHER_PATIENT, 2.0)

    assert journal.find_records(RecordQuery()) == [first, OTHER_PATIENT]
    assert journal.find_records(RecordQuery(patient_id="P2")) == [OTHER_PATIENT]
    assert journal.find_records(RecordQuery(accession_number="A1")) == [first]
    assert journal.find_records(RecordQuery(series_uid="4.4.1", study_uid="4.4")) == [OTHER_PATIENT]
    assert journal.find_records(RecordQuery(sop_instance_uid="9")) == []


def test_held_instances_names_only_those_held(open_journal: JournalOpener) -> None:
    """Storage commitment asks for several UIDs; only the held ones come back, with records."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)

    assert journal.held_instances(["1.2.1.1", "1.2.1.9"]) == {"1.2.1.1": RECORD}
    assert journal.instance("1.2.1.1") == RECORD
    assert journal.instance("1.2.1.9") is None


def test_list_studies_puts_pending_first_with_counts(open_journal: JournalOpener) -> None:
    """Pending studies come before finished ones, each with its instance and series counts."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(replace(RECORD, series_uid="1.2.2", sop_instance_uid="1.2.2.1"), 2.0)
    journal.add_instance(OTHER_PATIENT, 3.0)
    journal.finish_study("4.4", digest="d", message=message("4.4", 1), finished_at=4.0)

    rows = journal.list_studies(limit=10)

    assert [(r.study_uid, r.state, r.instances, r.series) for r in rows] == [
        ("1.2", "pending", 2, 2),
        ("4.4", "published", 1, 1),
    ]
    assert rows[1].finished_at == 4.0 and rows[1].version == 1
    assert len(journal.list_studies(limit=1)) == 1


def test_republication_needs_the_next_version_of_a_published_study(
    open_journal: JournalOpener,
) -> None:
    """A republication is queued only as the next version of a study still published."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    assert journal.queue_republication(message("1.2", 3)) is False
    assert journal.queue_republication(message("1.2", 2)) is True
    assert journal.outbox_depth() == 2
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2"), 3.0)  # pending again
    assert journal.queue_republication(message("1.2", 3)) is False
    row = journal.study("1.2")
    assert row is not None and row.version == 2


def test_retention_walks_finished_studies_then_prunes_records(open_journal: JournalOpener) -> None:
    """Finished studies are listed after a mark in finishing order; pruning keeps the version."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.add_instance(OTHER_PATIENT, 1.0)
    journal.add_instance(replace(OTHER_PATIENT, study_uid="5.5", sop_instance_uid="5.5.1"), 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)
    journal.finish_study("5.5", digest="d", message=message("5.5", 1), finished_at=2.0)

    start = (0.0, "")
    assert journal.finished_before(3.0, after=start, limit=10) == [(2.0, "1.2"), (2.0, "5.5")]
    assert journal.finished_before(3.0, after=start, limit=1) == [(2.0, "1.2")]
    assert journal.finished_before(3.0, after=(2.0, "1.2"), limit=10) == [(2.0, "5.5")]
    assert journal.finished_before(1.5, after=start, limit=10) == []

    journal.prune_study("1.2")
    assert journal.finished_before(3.0, after=start, limit=1) == [(2.0, "1.2")]  # pruned too
    journal.prune_study("4.4")  # pending: left alone

    assert journal.study_records("1.2") == [] and journal.study_records("4.4") == [OTHER_PATIENT]
    row = journal.study("1.2")
    assert row is not None and (row.state, row.version, row.digest) == ("pruned", 1, None)
    result = journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.5"), 5.0)
    assert result.reopened == ("1.2",)


def test_a_working_journal_is_writable(open_journal: JournalOpener) -> None:
    """writable() is True when a write transaction can commit."""
    assert open_journal().writable() is True


def test_make_durable_accepts_any_sequence_an_add_returned(open_journal: JournalOpener) -> None:
    """make_durable(result.sequence) returns for every add, duplicates included."""
    journal = open_journal()
    for result in (journal.add_instance(RECORD, 1.0), journal.add_instance(RECORD, 2.0)):
        journal.make_durable(result.sequence)
    assert journal.study_records("1.2") == [RECORD]


def test_concurrent_writers_of_one_instance_record_it_once(open_journal: JournalOpener) -> None:
    """The same instance sent on several associations at once: one NEW, the rest duplicates."""
    journal = open_journal()
    barrier = threading.Barrier(6)
    changes: list[Change] = []
    errors: list[BaseException] = []

    def send(index: int) -> None:
        record = replace(RECORD, sop_instance_uid=f"1.2.1.{index % 3}")
        barrier.wait()
        try:
            changes.append(journal.add_instance(record, 1.0).change)
        except BaseException as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(change.value for change in changes) == ["duplicate"] * 3 + ["new"] * 3
    assert len(journal.study_records("1.2")) == 3
    assert [row.study_uid for row in journal.pending_studies()] == ["1.2"]
