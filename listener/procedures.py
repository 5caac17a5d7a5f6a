"""What the listener does with MPPS and Storage Commitment requests (docs/completion.md).

MPPS states are kept in the journal. COMPLETED tells the aggregator which instances make up the
study, so it is published the moment they are all in; DISCONTINUED publishes what arrived, or a
``cancelled`` ImagingStudy when nothing did; IN PROGRESS may publish a ``registered`` one.
Storage Commitment commits what the journal (and the disk) holds.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from listener import mpps
from listener.aggregator import Aggregator
from listener.config import AggregatorSettings
from listener.finisher import Completion, StudyFinisher
from listener.instance_files import InstanceFiles
from listener.journal import JournalStore
from listener.logs import get_logger
from listener.model import StudyState
from listener.mpps import ProcedureStep, Status, WorkflowError

log = get_logger("listener.procedures")


@dataclass(frozen=True, slots=True)
class Expectation:
    """Instances a completed MPPS listed, and until when to wait for missing ones."""

    instances: frozenset[str]
    until: float


class ProcedureSteps:
    """MPPS N-CREATE/N-SET and Storage Commitment, on the service's journal and aggregator."""

    def __init__(
        self,
        *,
        journal: JournalStore,
        aggregator: Aggregator,
        finisher: StudyFinisher,
        files: InstanceFiles,
        settings: AggregatorSettings,
        lock: threading.Lock,
        clock: Callable[[], float],
        notify: Callable[[], None],
    ) -> None:
        self._journal = journal
        self._aggregator = aggregator
        self._finisher = finisher
        self._files = files
        self._settings = settings
        self._lock = lock
        self._clock = clock
        self._notify = notify
        # Completed MPPS whose study is not (yet) pending here: applied when instances arrive.
        self._waiting: dict[str, Expectation] = {}

    @property
    def _grace(self) -> float:
        return self._settings.mpps_grace_seconds or self._settings.quiet_period_seconds

    # -- MPPS ----------------------------------------------------------------------------------

    def create(self, sop_instance_uid: str, attributes: Dataset) -> tuple[Status, str]:
        """N-CREATE: validate and store a new MPPS (status, error comment)."""
        if self._journal.procedure_step(sop_instance_uid) is not None:
            return Status.DUPLICATE_SOP_INSTANCE, "an MPPS with this SOP Instance UID exists"
        try:
            step = mpps.create(attributes, sop_instance_uid)
        except WorkflowError as exc:
            return exc.status, exc.comment
        self._journal.save_procedure_step(
            step.to_json(), attributes.to_json_dict(), now=self._clock()
        )
        log.info("mpps created", mpps_uid=sop_instance_uid, study_uid=step.study_uid)
        if self._settings.publish_registered:
            self._publish_without_instances(step, Completion("mpps-in-progress", "registered"))
        return Status.SUCCESS, ""

    def update(
        self, sop_instance_uid: str, modification: Dataset
    ) -> tuple[Status, str, Dataset | None]:
        """N-SET: validate and apply a modification (status, error comment, new attributes)."""
        saved = self._journal.procedure_step(sop_instance_uid)
        if saved is None:
            return Status.NO_SUCH_SOP_INSTANCE, "no MPPS with this SOP Instance UID", None
        step = ProcedureStep.from_json(saved[0])
        attributes = Dataset.from_json(saved[1])
        merged = copy.deepcopy(attributes)
        for element in modification:
            merged[element.tag] = element
        try:
            updated = mpps.update(step, modification, merged)
        except WorkflowError as exc:
            return exc.status, exc.comment, None
        self._journal.save_procedure_step(
            updated.to_json(), merged.to_json_dict(), now=self._clock()
        )
        log.info("mpps updated", mpps_uid=sop_instance_uid, status=updated.status)
        if updated.status == mpps.COMPLETED:
            self._completed(updated)
        elif updated.status == mpps.DISCONTINUED:
            self._discontinued(updated)
        return Status.SUCCESS, "", merged

    def _completed(self, step: ProcedureStep) -> None:
        expectation = Expectation(step.expected_instances, self._clock() + self._grace)
        with self._lock:
            if step.study_uid in self._aggregator:
                self._aggregator.expect(
                    step.study_uid, expectation.instances, until=expectation.until
                )
            else:
                self._waiting[step.study_uid] = expectation
        self._notify()

    def _discontinued(self, step: ProcedureStep) -> None:
        with self._lock:
            pending = step.study_uid in self._aggregator
            if pending:
                present = {
                    r.sop_instance_uid for r in self._aggregator.snapshot(step.study_uid).instances
                }
                self._aggregator.expect(step.study_uid, present, until=self._clock())
        if pending:
            self._notify()
        elif not self._journal.study_records(step.study_uid) and self._settings.cancel_discontinued:
            self._publish_without_instances(step, Completion("mpps-discontinued", "cancelled"))

    def _publish_without_instances(self, step: ProcedureStep, completion: Completion) -> None:
        """A registered or cancelled ImagingStudy from the MPPS alone (no instance has arrived)."""
        with self._lock:
            if step.study_uid in self._aggregator or self._journal.study_records(step.study_uid):
                return
            state = StudyState(study_uid=step.study_uid, series=(), headers=(step.header,))
            message = self._finisher.finish(state, self._clock(), completion=completion)
        if message is not None:
            log.info(
                "study published from its MPPS",
                study_uid=step.study_uid,
                status=completion.status,
                version=message.version,
            )
            self._notify()

    def apply_waiting(self, study_uid: str) -> None:
        """Called under the service lock when a study becomes pending: apply a waiting MPPS."""
        expectation = self._waiting.pop(study_uid, None)
        if expectation is not None:
            self._aggregator.expect(study_uid, expectation.instances, until=expectation.until)

    def recover(self, study_uid: str) -> None:
        """After a restart, re-apply completed MPPS of a pending study (under the service lock)."""
        for saved in self._journal.procedure_steps(study_uid):
            step = ProcedureStep.from_json(saved)
            if step.status == mpps.COMPLETED:
                until = self._clock() + self._grace
                self._aggregator.expect(study_uid, step.expected_instances, until=until)

    # -- Storage Commitment --------------------------------------------------------------------

    def commitment(
        self, references: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Split (SOP Class, SOP Instance) pairs into those durably held and the others."""
        held = self._journal.held_instances([uid for _class, uid in references])
        committed, failed = [], []
        for sop_class, uid in references:
            record = held.get(uid)
            if (
                record is not None
                and record.sop_class_uid == sop_class
                and self._files.exists(record)
            ):
                committed.append((sop_class, uid))
            else:
                failed.append((sop_class, uid))
        return committed, failed
