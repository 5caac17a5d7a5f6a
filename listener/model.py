"""Plain frozen values shared by the pure core: what one instance told us, and a study's state.

Nothing here imports a network, storage or logging library, so the aggregator and the FHIR mapping
stay pure and can be tested with nothing but these values.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept from a DICOM code sequence item."""

    value: str
    scheme: str
    meaning: str
    scheme_uid: str = ""


@dataclass(frozen=True, slots=True)
class Issuer:
    """An issuer (of accession numbers, patient IDs, admission IDs) from DICOM's HL7v2 HD form."""

    local_id: str = ""
    universal_id: str = ""
    universal_id_type: str = ""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """The header fields of one instance that the ImagingStudy needs, plus where it is stored.

    Text values are decoded, stripped and free of control characters; an absent attribute is ``""``
    (``None`` for numbers, ``()`` for lists). Dates and times keep their DICOM form (``YYYYMMDD``,
    ``HHMMSS.FFFFFF``); person names keep DICOM PN form (``Family^Given=Ideographic=Phonetic``).
    """

    # Identity
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str = ""
    # Instance level
    instance_number: int | None = None
    content_label: str = ""
    document_title: str = ""
    concept_name: str = ""
    image_laterality: str = ""
    # Series level
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    series_time: str = ""
    body_part_examined: str = ""
    laterality: str = ""
    performing_physicians: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    specimens: tuple[str, ...] = ()
    specimen_uids: tuple[str, ...] = ()
    # Study level
    study_date: str = ""
    study_time: str = ""
    timezone_offset: str = ""
    accession_number: str = ""
    accession_issuer: Issuer | None = None
    study_id: str = ""
    study_description: str = ""
    study_comments: str = ""
    requested_procedure_comments: str = ""
    requested_procedure_ids: tuple[str, ...] = ()
    procedure_codes: tuple[Code, ...] = ()
    reason_codes: tuple[Code, ...] = ()
    reasons: tuple[str, ...] = ()
    referring_physician: str = ""
    reading_physicians: tuple[str, ...] = ()
    institution_name: str = ""
    department_name: str = ""
    admission_id: str = ""
    # Patient
    patient_id: str = ""
    patient_id_issuer: Issuer | None = None
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    # Storage
    file: str = ""
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the journal's representation)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        """Rebuild a record, ignoring unknown keys (a journal outlives the release writing it)."""
        hints = _record_hints()
        values = {key: _from_json(hints[key], value) for key, value in data.items() if key in hints}
        return cls(**values)


@functools.cache
def _record_hints() -> dict[str, Any]:
    return typing.get_type_hints(InstanceRecord)


def _from_json(hint: Any, value: Any) -> Any:
    """Turn JSON lists and objects back into the tuples and dataclasses a record holds."""
    if value is None:
        return None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return tuple(_from_json(args[0], item) for item in value)
    for candidate in (Code, Issuer):
        if hint is candidate or candidate in args:
            return candidate(**value)
    return value


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
    # Study-level attribute sources that are not instances (an MPPS), consulted after them.
    headers: tuple[InstanceRecord, ...] = ()

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
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    OUT_OF_RESOURCES = "out_of_resources"
    FAILED = "failed"
    SOP_CLASS_NOT_NEGOTIATED = "sop_class_not_negotiated"
    WRONG_ENCODING = "wrong_encoding"
    NO_DATASET = "no_dataset"
