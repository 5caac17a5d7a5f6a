"""Plain frozen values shared by the pure core: what one instance told us, and a study's state.

Nothing here imports a network, storage or logging library, so the aggregator and the FHIR mapping
stay pure and can be tested with nothing but these values.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """The header fields of one instance that the ImagingStudy needs, plus where it is stored.

    Text values are already decoded and stripped; an absent attribute is ``""`` (or ``None`` for
    numbers). Dates and times keep their DICOM form (``YYYYMMDD``, ``HHMMSS.FFFFFF``); the FHIR
    mapping turns them into FHIR dateTimes.
    """

    # Identity
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str = ""
    # Instance level
    instance_number: int | None = None
    # Series level
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    # Study level
    study_date: str = ""
    study_time: str = ""
    timezone_offset: str = ""
    accession_number: str = ""
    study_description: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    # Storage
    file: str = ""
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the journal's representation)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        """Rebuild a record, ignoring unknown keys (a journal outlives the release writing it)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series of a study, its instances in canonical order."""

    series_uid: str
    instances: tuple[InstanceRecord, ...]


@dataclass(frozen=True, slots=True)
class StudyState:
    """A snapshot of one study: its series in canonical order.

    Canonical order (series by number then UID, instances by number then UID) makes everything
    derived from a snapshot independent of the order in which instances arrived.
    """

    study_uid: str
    series: tuple[SeriesState, ...]

    @property
    def instances(self) -> tuple[InstanceRecord, ...]:
        """Every instance of the study, in canonical order."""
        return tuple(record for series in self.series for record in series.instances)

    @property
    def number_of_instances(self) -> int:
        """How many distinct SOP instances the study holds."""
        return sum(len(series.instances) for series in self.series)


class StoreOutcome(enum.Enum):
    """What became of one received instance; the DICOM adapter turns it into a C-STORE status."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    NOT_DICOM = "not_dicom"
    MISSING_UID = "missing_uid"
    INVALID_UID = "invalid_uid"
    MISMATCH = "mismatch"
    OUT_OF_RESOURCES = "out_of_resources"
    FAILED = "failed"

    @property
    def acknowledged(self) -> bool:
        """True when the sender gets success: the instance is durably ours."""
        return self in (StoreOutcome.STORED, StoreOutcome.DUPLICATE)
