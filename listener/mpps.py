"""Modality Performed Procedure Step (PS3.4 Annex F): validation and state, as plain values.

A modality creates an MPPS (N-CREATE, status IN PROGRESS) when it starts a procedure and sets it
COMPLETED or DISCONTINUED (N-SET) when it ends, listing in PerformedSeriesSequence the instances
it produced. That tells the completion policy exactly what a study holds, so the study can be
published the moment those instances are in, instead of after a quiet period.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from listener import dicom_codes
from listener.header import clean_uid, is_valid_uid, record_from_dataset, text_value
from listener.model import InstanceRecord

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL_STATES = (COMPLETED, DISCONTINUED)

# Attributes an N-CREATE must carry with a value (PS3.4 Table F.7.2-1, Type 1 at N-CREATE).
_REQUIRED_AT_CREATE = (
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus",
    "Modality",
)
# ... and an N-SET that ends the step (Type 1 for the final N-SET).
_REQUIRED_AT_END = ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")


class Status(enum.IntEnum):
    """DIMSE statuses the MPPS SCP answers (PS3.7 Annex C, PS3.4 F.7.2)."""

    SUCCESS = 0x0000
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = dicom_codes.PROCESSING_FAILURE  # Error ID A710: no longer updatable
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121


class WorkflowError(Exception):
    """An MPPS request the standard says to refuse; ``status`` is the DIMSE status to answer."""

    def __init__(self, status: Status, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass(frozen=True, slots=True)
class ProcedureStep:
    """One MPPS instance as far as completion and the ImagingStudy care.

    ``header`` carries the patient and study attributes the MPPS names (for a ``registered`` or
    ``cancelled`` ImagingStudy before any instance exists); ``expected`` the SOP Instance UIDs of
    PerformedSeriesSequence, by series.
    """

    sop_instance_uid: str
    study_uid: str
    status: str
    header: InstanceRecord
    expected: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def expected_instances(self) -> frozenset[str]:
        """Every SOP Instance UID the modality says it produced."""
        return frozenset(uid for _series, uids in self.expected for uid in uids)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the journal's representation)."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "study_uid": self.study_uid,
            "status": self.status,
            "header": self.header.to_json(),
            "expected": [[series, list(uids)] for series, uids in self.expected],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcedureStep:
        """Rebuild a step written by :meth:`to_json`."""
        return cls(
            sop_instance_uid=data["sop_instance_uid"],
            study_uid=data["study_uid"],
            status=data["status"],
            header=InstanceRecord.from_json(data["header"]),
            expected=tuple((series, tuple(uids)) for series, uids in data["expected"]),
        )


def _require(dataset: Dataset, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if keyword not in dataset:
            raise WorkflowError(Status.MISSING_ATTRIBUTE, f"{keyword} missing")
        if not text_value(dataset, keyword):
            raise WorkflowError(Status.MISSING_ATTRIBUTE_VALUE, f"{keyword} has no value")


def _study_uid(dataset: Dataset) -> str:
    """The study the step belongs to, from its Scheduled Step Attributes Sequence."""
    items = dataset.get("ScheduledStepAttributesSequence")
    if not items:
        raise WorkflowError(Status.MISSING_ATTRIBUTE, "ScheduledStepAttributesSequence missing")
    uid = clean_uid(items[0].get("StudyInstanceUID"))
    if not uid:
        raise WorkflowError(Status.MISSING_ATTRIBUTE_VALUE, "StudyInstanceUID missing")
    if not is_valid_uid(uid):
        raise WorkflowError(Status.INVALID_ATTRIBUTE_VALUE, "StudyInstanceUID malformed")
    return uid


def _header(dataset: Dataset, study_uid: str, sop_instance_uid: str) -> InstanceRecord:
    """Study-level attributes the MPPS carries, as a record (never counted as an instance)."""
    scheduled = dataset.ScheduledStepAttributesSequence[0]
    merged = Dataset()
    for source in (scheduled, dataset):
        for element in source:
            if element.keyword and element.keyword != "ScheduledStepAttributesSequence":
                merged[element.tag] = element
    merged.StudyInstanceUID = study_uid
    merged.SeriesInstanceUID = study_uid
    merged.SOPInstanceUID = sop_instance_uid
    merged.SOPClassUID = dicom_codes.MPPS_SOP_CLASS
    merged.StudyDate = text_value(dataset, "PerformedProcedureStepStartDate")
    merged.StudyTime = text_value(dataset, "PerformedProcedureStepStartTime")
    if not text_value(merged, "StudyDescription"):
        merged.StudyDescription = text_value(dataset, "PerformedProcedureStepDescription")
    return record_from_dataset(merged)


def _performed(dataset: Dataset) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """PerformedSeriesSequence as (series UID, SOP Instance UIDs) pairs."""
    performed = []
    for series in dataset.get("PerformedSeriesSequence") or []:
        uids: list[str] = []
        for keyword in (
            "ReferencedImageSequence",
            "ReferencedNonImageCompositeSOPInstanceSequence",
        ):
            for item in series.get(keyword) or []:
                uid = clean_uid(item.get("ReferencedSOPInstanceUID"))
                if uid:
                    uids.append(uid)
        performed.append((clean_uid(series.get("SeriesInstanceUID")), tuple(uids)))
    return tuple(performed)


def create(dataset: Dataset, sop_instance_uid: str) -> ProcedureStep:
    """Validate an N-CREATE and return the new step, or raise WorkflowError."""
    _require(dataset, _REQUIRED_AT_CREATE)
    if text_value(dataset, "PerformedProcedureStepStatus") != IN_PROGRESS:
        raise WorkflowError(Status.INVALID_ATTRIBUTE_VALUE, "an MPPS is created IN PROGRESS")
    study_uid = _study_uid(dataset)
    return ProcedureStep(
        sop_instance_uid=sop_instance_uid,
        study_uid=study_uid,
        status=IN_PROGRESS,
        header=_header(dataset, study_uid, sop_instance_uid),
        expected=_performed(dataset),
    )


def update(step: ProcedureStep, modification: Dataset, attributes: Dataset) -> ProcedureStep:
    """Validate an N-SET on ``step``; ``attributes`` is the MPPS with the modification applied."""
    if step.status in FINAL_STATES:
        raise WorkflowError(
            Status.PROCESSING_FAILURE, "Performed Procedure Step Object may no longer be updated"
        )
    status = text_value(attributes, "PerformedProcedureStepStatus")
    if status not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
        raise WorkflowError(Status.INVALID_ATTRIBUTE_VALUE, f"status {status!r} is not allowed")
    if status in FINAL_STATES:
        _require(attributes, _REQUIRED_AT_END)
    if "ScheduledStepAttributesSequence" in modification:
        raise WorkflowError(
            Status.INVALID_ATTRIBUTE_VALUE, "ScheduledStepAttributesSequence cannot be changed"
        )
    return dataclasses.replace(step, status=status, expected=_performed(attributes))
