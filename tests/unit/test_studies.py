"""Pending studies shared by several processes: each study finished once, whoever received it.

Each "process" here is a PendingStudies on its own handle of one journal (SQLite or PostgreSQL),
as with ``dicom.workers`` or several nodes; none of them holds state the others lack.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

from listener.config import AggregatorSettings
from listener.fhir import FhirOptions
from listener.finisher import StudyFinisher
from listener.journal_api import JournalStore
from listener.mpps import COMPLETED, ProcedureStep
from listener.studies import CLAIM_SECONDS, PendingStudies
from tests.conftest import JournalOpener
from tests.unit.test_journal import RECORD

QUIET = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def process(journal: JournalStore, clock: Clock) -> PendingStudies:
    settings = AggregatorSettings(quiet_period_seconds=QUIET)
    finisher = StudyFinisher(journal, options=FhirOptions())
    return PendingStudies(journal, finisher, settings=settings, clock=clock)


def instance(number: int, study_uid: str = "1.2") -> Any:
    return replace(
        RECORD,
        study_uid=study_uid,
        series_uid=f"{study_uid}.1",
        sop_instance_uid=f"{study_uid}.1.{number}",
        instance_number=number,
    )


def drain(journal: JournalStore) -> list[dict[str, Any]]:
    """Every queued message's headers, oldest first, removing them."""
    headers = []
    while (message := journal.next_outbox()) is not None:
        headers.append(
            {**message.headers, "message_id": message.message_id, "body": json.loads(message.body)}
        )
        journal.remove_outbox(message.id)
    return headers


def test_a_study_received_by_two_processes_is_published_once_whole(
    open_journal: JournalOpener,
) -> None:
    """Instances recorded by two processes make one version holding both, finished once."""
    clock = Clock()
    first, second = open_journal(), open_journal()
    a, b = process(first, clock), process(second, clock)
    a.record(instance(1), clock.now)
    b.record(instance(2), clock.now + 1)
    clock.now += QUIET + 1

    finished = [b.finish_due(), a.finish_due()]

    assert finished == [1, 0]
    [published] = drain(first)
    assert (published["message_id"], published["instance_count"]) == ("1.2/v1", 2)


def test_processes_finishing_at_once_publish_each_study_exactly_once(
    open_journal: JournalOpener,
) -> None:
    """Three processes racing over twenty due studies finish each exactly once between them."""
    clock = Clock()
    journals = [open_journal() for _ in range(3)]
    for number in range(20):
        process(journals[number % 3], clock).record(instance(1, f"2.{number}"), clock.now)
    clock.now += QUIET + 1
    counts: list[int] = []
    threads = [
        threading.Thread(target=lambda j=j: counts.append(process(j, clock).finish_due()))
        for j in journals
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    published = drain(journals[0])
    assert sum(counts) == 20
    assert sorted(m["message_id"] for m in published) == sorted(f"2.{n}/v1" for n in range(20))


def test_a_completed_mpps_saved_by_one_process_finishes_the_study_in_another(
    open_journal: JournalOpener,
) -> None:
    """N-SET COMPLETED on one node, instances on another: published before the quiet period."""
    clock = Clock()
    first, second = open_journal(), open_journal()
    process(first, clock).record(instance(1), clock.now)
    step = ProcedureStep(
        sop_instance_uid="9.1",
        study_uid="1.2",
        status=COMPLETED,
        header=instance(1),
        expected=(("1.2.1", ("1.2.1.1",)),),
    )
    second.save_procedure_step(step.to_json(), {}, now=clock.now)
    clock.now += 1

    assert process(second, clock).finish_due() == 1
    [published] = drain(first)
    assert published["completion_reason"] == "mpps-completed"


def test_a_study_claimed_by_a_process_that_died_is_finished_after_the_claim_lapses(
    open_journal: JournalOpener,
) -> None:
    """A claim whose holder died delays the study by at most CLAIM_SECONDS, never loses it."""
    clock = Clock()
    first, second = open_journal(), open_journal()
    process(first, clock).record(instance(1), clock.now)
    clock.now += QUIET + 1
    assert first.claim_study("1.2", now=clock.now, until=clock.now + CLAIM_SECONDS) is not None

    survivor = process(second, clock)
    assert survivor.finish_due() == 0
    clock.now += CLAIM_SECONDS
    assert survivor.finish_due() == 1
    assert [m["message_id"] for m in drain(second)] == ["1.2/v1"]


def test_an_instance_recorded_while_the_study_is_finished_is_not_left_out(
    open_journal: JournalOpener,
) -> None:
    """A version being written when another process records an instance yields to it."""
    clock = Clock()
    first, second = open_journal(), open_journal()
    finishing, receiving = process(first, clock), process(second, clock)
    finishing.record(instance(1), clock.now)
    clock.now += QUIET + 1
    real_records = first.study_records

    def records_then_a_late_arrival(study_uid: str) -> Any:
        records = real_records(study_uid)
        receiving.record(instance(2), clock.now)  # lands between the read and the write
        return records

    first.study_records = records_then_a_late_arrival  # type: ignore[method-assign]
    assert finishing.finish_due() == 0
    first.study_records = real_records  # type: ignore[method-assign]
    assert first.outbox_depth() == 0

    clock.now += QUIET + 1
    assert finishing.finish_due() == 1
    [published] = drain(first)
    assert published["instance_count"] == 2
    published_uids = {
        entry["uid"] for series in published["body"]["series"] for entry in series["instance"]
    }
    assert published_uids == {"1.2.1.1", "1.2.1.2"}
