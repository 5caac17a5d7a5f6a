"""Claims through the journal: several processes on one journal finish each study once.

Each test opens the same journal twice, as two listener processes (or nodes) would, and runs on
SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import replace

from listener.mpps import COMPLETED, IN_PROGRESS
from tests.conftest import JournalOpener
from tests.unit.test_journal import RECORD, message

SECOND = replace(RECORD, sop_instance_uid="1.2.1.2")
OTHER_STUDY = replace(RECORD, study_uid="4.4", series_uid="4.4.1", sop_instance_uid="4.4.1.1")


def step(status: str, study_uid: str = "1.2", uid: str = "9.1") -> dict[str, str]:
    return {"sop_instance_uid": uid, "study_uid": study_uid, "status": status}


def test_a_study_is_a_due_candidate_once_its_quiet_period_elapsed(
    open_journal: JournalOpener,
) -> None:
    """due_studies lists a pending study only from last arrival + quiet period on."""
    journal = open_journal()
    journal.add_instance(RECORD, 10.0)

    assert journal.due_studies(14.0, quiet_period=5.0, max_age=0.0) == []
    assert [r.study_uid for r in journal.due_studies(15.0, quiet_period=5.0, max_age=0.0)] == [
        "1.2"
    ]


def test_max_age_makes_a_study_a_candidate_despite_new_arrivals(
    open_journal: JournalOpener,
) -> None:
    """With max_age, a study counts from when it became pending, whatever arrives later."""
    journal = open_journal()
    journal.add_instance(RECORD, 10.0)
    journal.add_instance(SECOND, 19.0)

    assert journal.due_studies(20.0, quiet_period=5.0, max_age=0.0) == []
    assert len(journal.due_studies(20.0, quiet_period=5.0, max_age=10.0)) == 1


def test_an_unconsumed_completed_mpps_makes_its_study_a_candidate(
    open_journal: JournalOpener,
) -> None:
    """A COMPLETED MPPS may finish a study before its quiet period; once consumed it may not."""
    journal = open_journal()
    journal.add_instance(RECORD, 10.0)
    journal.save_procedure_step(step(IN_PROGRESS, uid="9.0"), {}, now=10.0)
    assert journal.due_studies(11.0, quiet_period=5.0, max_age=0.0) == []

    journal.save_procedure_step(step(COMPLETED), {}, now=10.5)
    assert len(journal.due_studies(11.0, quiet_period=5.0, max_age=0.0)) == 1

    journal.consume_procedure_steps(["9.1"])
    assert journal.due_studies(11.0, quiet_period=5.0, max_age=0.0) == []


def test_only_one_process_holds_a_claim_until_it_lapses(open_journal: JournalOpener) -> None:
    """A claim excludes other claimers until its lease ends; a held study is no candidate."""
    first, second = open_journal(), open_journal()
    first.add_instance(RECORD, 10.0)

    held = first.claim_study("1.2", now=20.0, until=50.0)

    assert held is not None and held.study_uid == "1.2"
    assert second.claim_study("1.2", now=21.0, until=51.0) is None
    assert second.due_studies(21.0, quiet_period=5.0, max_age=0.0) == []
    assert second.claim_study("1.2", now=50.0, until=80.0) is not None


def test_a_fenced_finish_succeeds_once(open_journal: JournalOpener) -> None:
    """Finishing with the claimed row publishes once; the same fence again writes nothing."""
    first, second = open_journal(), open_journal()
    first.add_instance(RECORD, 10.0)
    fence = first.claim_study("1.2", now=20.0, until=50.0)
    assert fence is not None

    won = first.finish_study(
        "1.2", digest="d", message=message("1.2", 1), finished_at=21.0, fence=fence
    )
    lost = second.finish_study(
        "1.2", digest="d", message=message("1.2", 1), finished_at=22.0, fence=fence
    )

    assert (won, lost) == (True, False)
    assert second.outbox_depth() == 1
    row = second.study("1.2")
    assert row is not None and (row.state, row.version) == ("published", 1)


def test_an_instance_arriving_after_the_claim_breaks_the_fence(
    open_journal: JournalOpener,
) -> None:
    """A study that gained an instance since it was claimed is not finished without it."""
    first, second = open_journal(), open_journal()
    first.add_instance(RECORD, 10.0)
    fence = first.claim_study("1.2", now=20.0, until=50.0)
    assert fence is not None

    second.add_instance(SECOND, 20.5)
    finished = first.finish_study(
        "1.2", digest="d", message=message("1.2", 1), finished_at=21.0, fence=fence
    )

    assert finished is False
    assert first.outbox_depth() == 0
    row = first.study("1.2")
    assert row is not None and row.state == "pending" and row.revision == fence.revision + 1


def test_a_released_claim_can_be_taken_at_once(open_journal: JournalOpener) -> None:
    """After release_study another process may claim the study without waiting for the lease."""
    first, second = open_journal(), open_journal()
    first.add_instance(RECORD, 10.0)
    assert first.claim_study("1.2", now=20.0, until=50.0) is not None

    first.release_study("1.2")

    assert second.claim_study("1.2", now=21.0, until=51.0) is not None


def test_finishing_consumes_the_mpps_it_took_into_account(open_journal: JournalOpener) -> None:
    """The MPPS named at finish no longer make the study (when re-opened) due at once."""
    journal = open_journal()
    journal.add_instance(RECORD, 10.0)
    journal.save_procedure_step(step(COMPLETED), {}, now=10.5)
    fence = journal.claim_study("1.2", now=11.0, until=40.0)
    assert fence is not None
    journal.finish_study(
        "1.2", digest="d", message=None, finished_at=11.0, fence=fence, consumed_steps=["9.1"]
    )

    journal.add_instance(SECOND, 12.0)

    assert journal.due_studies(13.0, quiet_period=5.0, max_age=0.0) == []


def test_a_leased_message_holds_back_its_studys_later_versions(
    open_journal: JournalOpener,
) -> None:
    """While one relay publishes a study's v1, another takes a different study, never its v2."""
    first, second = open_journal(), open_journal()
    for study_uid, version in [("1.2", 1), ("1.2", 2), ("4.4", 1)]:
        first.finish_study(
            study_uid, digest="d", message=message(study_uid, version), finished_at=1.0
        )

    taken = first.next_outbox(now=5.0, lease_until=35.0)
    other = second.next_outbox(now=5.0, lease_until=35.0)
    nothing = second.next_outbox(now=6.0, lease_until=36.0)

    assert taken is not None and taken.message_id == "1.2/v1"
    assert other is not None and other.message_id == "4.4/v1"
    assert nothing is None


def test_a_released_or_lapsed_message_is_taken_again(open_journal: JournalOpener) -> None:
    """A message whose relay failed (release) or died (lease lapsed) is published by another."""
    first, second = open_journal(), open_journal()
    first.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=1.0)
    taken = first.next_outbox(now=5.0, lease_until=35.0)
    assert taken is not None

    assert second.next_outbox(now=34.0, lease_until=64.0) is None
    lapsed = second.next_outbox(now=35.0, lease_until=65.0)
    assert lapsed is not None and lapsed.message_id == taken.message_id
    second.release_outbox(lapsed.id)
    again = first.next_outbox(now=36.0, lease_until=66.0)
    assert again is not None and again.id == taken.id


def test_a_restarted_holder_releases_what_its_predecessor_held(
    open_journal: JournalOpener,
) -> None:
    """After a SIGKILL the same holder frees its claims and leases at once; others' stay."""
    first, second = open_journal(), open_journal()
    first.add_instance(RECORD, 10.0)
    first.add_instance(OTHER_STUDY, 10.0)
    first.finish_study("7.7", digest="d", message=message("7.7", 1), finished_at=1.0)
    assert first.claim_study("1.2", now=20.0, until=50.0, holder="node-a/0") is not None
    assert first.claim_study("4.4", now=20.0, until=50.0, holder="node-b/0") is not None
    assert first.next_outbox(now=20.0, lease_until=50.0, holder="node-a/0") is not None

    second.release_holder("node-a/0")

    assert second.claim_study("1.2", now=21.0, until=51.0, holder="node-a/0") is not None
    assert second.claim_study("4.4", now=21.0, until=51.0, holder="node-a/0") is None
    assert second.next_outbox(now=21.0, lease_until=51.0) is not None


def test_a_holder_takes_its_own_lease_again(open_journal: JournalOpener) -> None:
    """A relay whose remove failed publishes its leased message again at once; others wait."""
    first, second = open_journal(), open_journal()
    first.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=1.0)
    taken = first.next_outbox(now=5.0, lease_until=35.0, holder="node-a/0")
    assert taken is not None

    assert second.next_outbox(now=6.0, lease_until=36.0, holder="node-b/0") is None
    again = first.next_outbox(now=6.0, lease_until=36.0, holder="node-a/0")
    assert again is not None and again.id == taken.id
