"""Plain frozen values shared by the pure core: what one instance told us, and a study's state.

Nothing here imports a network, storage or logging library, so the aggregator and the FHIR mapping
stay pure and can be tested with nothing but these values.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
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
class IssuedId:
    """An identifier and who issued it (an accession number, a specimen identifier)."""

    value: str
    issuer: Issuer | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One RequestAttributesSequence item: the order (accession) and requested procedure."""

    accession: str = ""
    issuer: Issuer | None = None
    procedure_id: str = ""
    codes: tuple[Code, ...] = ()


@dataclass(frozen=True, slots=True)
class StaffId:
    """A person named in a header (PN form, may be empty) and the codes identifying them.

    The codes come from a Person Identification Code Sequence (0040,1101): each code value is an
    identifier, its coding scheme the issuer.
    """

    name: str
    codes: tuple[Code, ...] = ()


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
    image_type: str = ""
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
    # Specimens whose identifier names its issuer (IssuerOfTheSpecimenIdentifierSequence).
    specimen_issuers: tuple[IssuedId, ...] = ()
    # AnatomicRegionSequence (first item's modifiers).
    anatomic_regions: tuple[Code, ...] = ()
    anatomic_region_modifiers: tuple[Code, ...] = ()
    performing_physician_ids: tuple[StaffId, ...] = ()
    operator_ids: tuple[StaffId, ...] = ()
    # Study level
    study_date: str = ""
    study_time: str = ""
    timezone_offset: str = ""
    accession_number: str = ""
    accession_issuer: Issuer | None = None
    # The RequestAttributesSequence items (several for grouped procedures).
    requests: tuple[Request, ...] = ()
    study_id: str = ""
    study_description: str = ""
    study_comments: str = ""
    requested_procedure_comments: str = ""
    requested_procedure_ids: tuple[str, ...] = ()
    procedure_codes: tuple[Code, ...] = ()
    # Top-level RequestedProcedureCodeSequence (each request item has its own codes).
    requested_procedure_codes: tuple[Code, ...] = ()
    reason_codes: tuple[Code, ...] = ()
    reasons: tuple[str, ...] = ()
    referring_physician: str = ""
    referring_physician_ids: tuple[Code, ...] = ()
    reading_physicians: tuple[str, ...] = ()
    institution_name: str = ""
    department_name: str = ""
    admission_id: str = ""
    admission_issuer: Issuer | None = None
    performed_location: str = ""
    # Patient
    patient_id: str = ""
    patient_id_issuer: Issuer | None = None
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    # Storage
    file: str = ""
    size: int = 0
    node: str = ""  # storage.node_name of the listener holding the file ("" before it was recorded)
    # SHA-256 of the dataset as received (after the File Meta Information); "" in records
    # journaled before schema 4. Two receptions with equal digests carry the same content.
    digest: str = ""

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
    return _hints(InstanceRecord)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a dataclass (computed once per class)."""
    return typing.get_type_hints(cls)


def _from_json(hint: Any, value: Any) -> Any:
    """Turn JSON lists and objects back into the tuples and dataclasses a record holds."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return tuple(_from_json(args[0], item) for item in value)
    if origin in (typing.Union, types.UnionType):
        return _from_json(next(arg for arg in args if arg is not type(None)), value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = _hints(hint)
        return hint(
            **{key: _from_json(hints[key], item) for key, item in value.items() if key in hints}
        )
    return value


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series of a study, its instances in canonical order.

    ``latest_first`` holds the same instances, the most recently received first: series-level
    values (description, number, modality, ...) come from there (docs/mapping.md).
    """

    series_uid: str
    instances: tuple[InstanceRecord, ...]
    latest_first: tuple[InstanceRecord, ...] = ()

    def __post_init__(self) -> None:
        if not self.latest_first:
            object.__setattr__(self, "latest_first", self.instances)


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
    # Every instance, the most recently received first: study-level values come from there.
    latest_first: tuple[InstanceRecord, ...] = ()

    def __post_init__(self) -> None:
        if not self.latest_first:
            object.__setattr__(self, "latest_first", self.instances)

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
    KEPT_FIRST = "kept_first"  # changed re-send acknowledged, stored version kept (keep-first)
    CHANGED_REFUSED = "changed_refused"  # changed re-send refused (reject)
    OUT_OF_RESOURCES = "out_of_resources"
    FAILED = "failed"
    SOP_CLASS_NOT_NEGOTIATED = "sop_class_not_negotiated"
    WRONG_ENCODING = "wrong_encoding"
    NO_DATASET = "no_dataset"


class Resend(enum.Enum):
    """How a received instance relates to the one already held under its SOP Instance UID."""

    NEW = "new"
    IDENTICAL = "identical"
    CHANGED = "changed"


def compare_resend(held: InstanceRecord | None, received: InstanceRecord) -> Resend:
    """Classify ``received`` against ``held`` (None when its SOP Instance UID is not held).

    With both content digests known, identical means the same dataset bytes in the same transfer
    syntax, pixel data included. A record journaled before digests existed is compared by its
    header fields, as before (an identical re-send must not create a version after an upgrade).
    """
    if held is None:
        return Resend.NEW
    if held.digest and received.digest:
        same = (held.digest, held.transfer_syntax_uid) == (
            received.digest,
            received.transfer_syntax_uid,
        )
    else:
        same = _header(held) == _header(received)
    return Resend.IDENTICAL if same else Resend.CHANGED


def _header(record: InstanceRecord) -> InstanceRecord:
    """The record without what storage adds (file, size, node, digest)."""
    return dataclasses.replace(record, file="", size=0, node="", digest="")


def describe_change(held: InstanceRecord, received: InstanceRecord) -> str:
    """What a changed re-send changed, for logs: its study, its series, its header or its bytes."""
    if held.study_uid != received.study_uid:
        return "moved-study"
    if held.series_uid != received.series_uid:
        return "moved-series"
    return "header" if _header(held) != _header(received) else "content"
