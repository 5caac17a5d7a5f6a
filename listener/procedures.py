"""What the listener does with MPPS and Storage Commitment requests (docs/completion.md).

MPPS states are kept in the journal, where any process finishing the study reads them (see
:mod:`listener.studies`): COMPLETED lists the instances that make up the study, so it is published
the moment they are all in; DISCONTINUED publishes what arrived, or a ``cancelled``
ImagingStudy when nothing did; IN PROGRESS may publish a ``registered`` one. Storage Commitment
commits what the journal (and this node's disk) holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from pydicom.dataset import Dataset

from listener import mpps
from listener.config import AggregatorSettings
from listener.finisher import Completion, StudyFinisher
from listener.instance_files import InstanceFiles
from listener.journal_api import JournalStore
from listener.logs import get_logger
from listener.model import StudyState
from listener.mpps import ProcedureStep, Status, WorkflowError

log = get_logger("listener.procedures")


class ProcedureSteps:
    """MPPS N-CREATE/N-SET and Storage Commitment, on the journal."""

    def __init__(
        self,
        *,
        journal: JournalStore,
        finisher: StudyFinisher,
        files: InstanceFiles,
        settings: AggregatorSettings,
        clock: Callable[[], float],
        notify: Callable[[], None],
    ) -> None:
        self._journal = journal
        self._finisher = finisher
        self._files = files
        self._settings = settings
        self._clock = clock
        self._notify = notify

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
        if updated.status == mpps.DISCONTINUED:
            self._discontinued(updated)
        if updated.status in mpps.FINAL_STATES:
            self._notify()  # the study may be due now
        return Status.SUCCESS, "", merged

    def _discontinued(self, step: ProcedureStep) -> None:
        """A study with no instances is cancelled; a published one is left as it is."""
        row = self._journal.study(step.study_uid)
        if row is not None and row.state == "pending":
            return  # the next finishing pass publishes what arrived
        if not self._journal.study_records(step.study_uid) and self._settings.cancel_discontinued:
            self._publish_without_instances(step, Completion("mpps-discontinued", "cancelled"))
        # Nothing pending to apply it to: it must not finish a later re-opening at once.
        self._journal.consume_procedure_steps([step.sop_instance_uid])

    def _publish_without_instances(self, step: ProcedureStep, completion: Completion) -> None:
        """A registered or cancelled ImagingStudy from the MPPS alone (no instance has arrived)."""
        if self._journal.study_records(step.study_uid):
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
                and self._files.held(record)
            ):
                committed.append((sop_class, uid))
            else:
                failed.append((sop_class, uid))
        return committed, failed
