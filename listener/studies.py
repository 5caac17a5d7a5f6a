"""Pending studies: recording their instances and finishing the due ones, through the journal.

The one owner of pending-study state (DESIGN.md "Where things live"). The journal is the truth and
nothing about a pending study is held in this process, so any process (``dicom.workers``, other
nodes on one PostgreSQL) may record instances of a study and any may finish it. A claim in the
journal (a lease) keeps the others from doing the same work at once, and the fence checked when
the version is written (still pending, same version and revision) makes exactly one finish it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from listener import mpps
from listener.aggregator import Clocks, Outcome, Plan, plan_finish
from listener.config import AggregatorSettings
from listener.finisher import ClaimLost, Completion, StudyFinisher
from listener.journal_api import AddResult, Change, JournalError, JournalStore, StudyRow
from listener.logs import get_logger
from listener.model import InstanceRecord

log = get_logger("listener.studies")

# How long a claim holds a study: another process's death while finishing one delays it this long
# (a process restarted as the same holder releases its predecessor's claims at once).
CLAIM_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Claimed:
    row: StudyRow
    plan: Plan
    consumed: tuple[str, ...]


class PendingStudies:
    """Records instances into pending studies and finishes due ones exactly once."""

    def __init__(
        self,
        journal: JournalStore,
        finisher: StudyFinisher,
        *,
        settings: AggregatorSettings,
        clock: Callable[[], float] = time.time,
        holder: str = "",
    ) -> None:
        self._journal = journal
        self._holder = holder
        self._finisher = finisher
        self._clocks = Clocks(
            quiet_period=settings.quiet_period_seconds,
            max_age=settings.max_study_age_seconds,
            grace=settings.mpps_grace_seconds or settings.quiet_period_seconds,
        )
        self._clock = clock

    def record(self, record: InstanceRecord, now: float) -> AddResult:
        """Record an instance (durable once ``make_durable(result.sequence)`` returns)."""
        result = self._journal.add_instance(record, now)
        if result.change is not Change.DUPLICATE:
            for study_uid in result.reopened:
                log.info("study re-opened by a late instance", study_uid=study_uid)
            for study_uid in result.emptied:
                log.warning(
                    "instance moved to another study, leaving its old study empty",
                    old_study_uid=study_uid,
                    study_uid=record.study_uid,
                    sop_instance_uid=record.sop_instance_uid,
                )
        return result

    def count(self) -> int:
        """How many studies are pending (in the whole journal, not only this process's)."""
        return self._journal.pending_count()

    def finish_due(self) -> int:
        """Finish every due study no other process holds; return how many this one finished."""
        now = self._clock()
        finished = 0
        candidates = self._journal.due_studies(
            now,
            quiet_period=self._clocks.quiet_period,
            max_age=self._clocks.max_age,
            holder=self._holder,
        )
        for candidate in candidates:
            if self._finish(candidate.study_uid, now):
                finished += 1
        return finished

    def _finish(self, study_uid: str, now: float) -> bool:
        """Claim one candidate, and publish it if it is due; True if this process finished it."""
        row = self._journal.claim_study(
            study_uid, now=now, until=now + CLAIM_SECONDS, holder=self._holder
        )
        if row is None:
            return False  # another process holds it
        try:
            claimed = self._plan(row, now)
            if claimed is None:
                self._journal.release_study(study_uid)
                return False
            self._publish(claimed, now)
        except ClaimLost:
            log.debug("study changed while being finished; retried", study_uid=study_uid)
            self._journal.release_study(study_uid)
            return False
        except JournalError:
            _release_quietly(self._journal, study_uid)
            raise
        return True

    def _plan(self, row: StudyRow, now: float) -> _Claimed | None:
        """What the claimed study would be published as now, or None if it is not due."""
        records = self._journal.study_records(row.study_uid)
        if not records:
            # Its instances moved to another study (journals before schema 3 left it here).
            self._journal.settle_if_empty(row.study_uid)
            return None
        outcomes = [
            _outcome(step, saved_at)
            for step, saved_at in self._journal.unconsumed_steps(row.study_uid)
        ]
        plan = plan_finish(
            records,
            last_arrival=row.last_received_at,
            first_arrival=row.opened_at,
            outcomes=outcomes,
            clocks=self._clocks,
            now=now,
        )
        if plan is None:
            return None
        return _Claimed(row, plan, tuple(o.sop_instance_uid for o in outcomes))

    def _publish(self, claimed: _Claimed, now: float) -> None:
        """Write the claimed study's next version (raises ClaimLost if the fence fails)."""
        plan = claimed.plan
        message = self._finisher.finish(
            plan.state,
            now,
            completion=Completion(reason=plan.reason, missing=plan.missing),
            fence=claimed.row,
            consumed_steps=claimed.consumed,
        )
        log.info(
            "study finished",
            study_uid=plan.state.study_uid,
            reason=plan.reason,
            series=len(plan.state.series),
            instances=plan.state.number_of_instances,
            version=message.version if message else None,
            changed=message is not None,
        )
        if plan.missing:
            log.warning(
                "study published without instances its MPPS listed",
                study_uid=plan.state.study_uid,
                missing=len(plan.missing),
            )


def _outcome(step_json: dict[str, object], saved_at: float) -> Outcome:
    step = mpps.ProcedureStep.from_json(dict(step_json))
    return Outcome(
        sop_instance_uid=step.sop_instance_uid,
        discontinued=step.status == mpps.DISCONTINUED,
        expected=step.expected_instances,
        saved_at=saved_at,
    )


def _release_quietly(journal: JournalStore, study_uid: str) -> None:
    """Give up a claim after a journal error; if that fails too, the lease lapses by itself."""
    with contextlib.suppress(JournalError):
        journal.release_study(study_uid)
