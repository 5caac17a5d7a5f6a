"""Read a received instance's header into an InstanceRecord, never touching its pixel data.

A file walked by :func:`listener.scan.scan` is read from the raw values that walk copied
out (only the top-level elements in :data:`HEADER_KEYWORDS`), so it is parsed once; deflated files
too, the walk running over their streamed inflation. Any other file is parsed by pydicom, stopping
before Pixel Data and deferring other large values (a deflated one over the same streamed
inflation, never inflated whole), so memory does not grow with the size of the instance. Every
attribute is read defensively: a malformed optional value becomes empty instead of failing the
whole instance; only a missing or invalid identifying UID rejects it.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import pydicom.config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from listener.inflate import DeflateError, inflated_dataset
from listener.model import Code, InstanceRecord, IssuedId, Issuer, Request, StaffId
from listener.scan import DEFLATED, Scan, locate

# Values larger than this are not read into memory while parsing (pydicom reads them on access).
_DEFER_SIZE = 64 * 1024
_SPECIFIC_CHARACTER_SET = 0x00080005
_T = TypeVar("_T")
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX_LENGTH = 64
# C0 controls and DEL, except tab, line feed and carriage return: FHIR strings cannot carry them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Every top-level attribute record_from_dataset reads (items of its sequences come with them).
HEADER_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ContentLabel",
    "DocumentTitle",
    "ConceptNameCodeSequence",
    "ImageLaterality",
    "ImageType",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "SpecimenDescriptionSequence",
    "AnatomicRegionSequence",
    "StudyDate",
    "StudyTime",
    "TimezoneOffsetFromUTC",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "StudyDescription",
    "StudyComments",
    "RequestAttributesSequence",
    "RequestedProcedureComments",
    "RequestedProcedureID",
    "ProcedureCodeSequence",
    "RequestedProcedureCodeSequence",
    "ReasonForRequestedProcedureCodeSequence",
    "ReasonForTheRequestedProcedure",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "PerformedLocation",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
)
HEADER_TAGS = frozenset(int(tag_for_keyword(keyword) or 0) for keyword in HEADER_KEYWORDS)


class HeaderProblem(enum.Enum):
    """Why an instance cannot be used; the DICOM adapter maps each to a failure status."""

    NOT_DICOM = "not a readable DICOM dataset"
    MISSING_UID = "Study, Series or SOP Instance UID missing"
    INVALID_UID = "Study, Series or SOP Instance UID malformed"


class HeaderError(Exception):
    """The instance cannot be turned into a record."""

    def __init__(self, problem: HeaderProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem


def clean_uid(value: Any) -> str:
    """A UID with the padding (trailing NUL or space) some senders leave, removed."""
    return str(value or "").strip().rstrip("\x00").strip()


def is_valid_uid(uid: str) -> bool:
    """True for a syntactically valid DICOM UID (digits and dots, no leading zeros, <= 64 chars)."""
    return len(uid) <= _UID_MAX_LENGTH and _UID_PATTERN.fullmatch(uid) is not None


def configure_lenient_reading() -> None:
    """Read malformed values silently: pydicom's validation warnings would quote them (PHI)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def read_record(path: Path, scanned: Scan | None = None) -> InstanceRecord:
    """The record of the DICOM file at ``path`` (file and size left unset).

    ``scanned``: the file's :func:`~listener.scan.scan` with :data:`HEADER_TAGS`, used
    instead of parsing the file again when it is ``usable``.
    """
    if scanned is not None and scanned.usable:
        return record_from_dataset(_ScannedValues(scanned), scanned.transfer_syntax)
    located = scanned if scanned is not None else locate(str(path))
    if located.transfer_syntax != DEFLATED:
        parsed = _parsed(
            lambda: pydicom.dcmread(path, stop_before_pixels=True, defer_size=_DEFER_SIZE)
        )
        return record_from_dataset(parsed)
    with _parsed(lambda: path.open("rb")) as file:
        # Deferred values are read from the stream while the record is built, so it stays open.
        inflated = _parsed(lambda: inflated_dataset(file, located.dataset_offset, _DEFER_SIZE))
        return record_from_dataset(inflated, DEFLATED)


def _parsed(parse: Callable[[], _T]) -> _T:
    """What ``parse`` returns; any failure to open or parse the file is a :class:`HeaderError`."""
    try:
        return parse()
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError) as exc:
        raise HeaderError(HeaderProblem.NOT_DICOM, type(exc).__name__) from None
    except DeflateError as exc:
        raise HeaderError(HeaderProblem.NOT_DICOM, str(exc)) from None


class _ScannedValues:
    """A scanned header's top-level values: plain ones decoded here, the rest by pydicom.

    pydicom's conversion of a raw element (hooks, validation, MultiValue, PersonName) cost about
    three quarters of the record's reading time; the ~20 plain values of a typical header are
    decoded here exactly as pydicom decodes them (``pydicom.values``: the same stripping,
    splitting and character set), and anything else (sequences, escape sequences, undecodable
    bytes, unusual VRs, names with component groups) goes to pydicom's dataset, built on first
    need. ``tests/unit/test_header.py`` compares every record read this way with pydicom's.
    """

    def __init__(self, scanned: Scan) -> None:
        self._scanned = scanned
        self._dataset: Dataset | None = None
        self._encodings = _encodings(scanned)
        # "": a character set pydicom does not understand either; it decodes every text value
        self._encoding = self._encodings[0] if self._encodings else ""

    def value(self, tag: BaseTag) -> Any:
        """The value pydicom would give for ``tag``; None when absent."""
        raw = self._scanned.elements.get(int(tag))
        if raw is None:
            return None
        vr = raw.vr or _dictionary_vr(int(tag))
        decoded = self._decoded(vr, raw.value)
        if decoded is not _UNDECIDED:
            return decoded
        return self._pydicom()[tag].value

    def _decoded(self, vr: str, value: bytes) -> Any:
        if vr in _DEFAULT_ENCODED_VRS:  # pydicom decodes these with the default encoding
            return _default_encoded(vr, value)
        if vr == "IS":
            return _integers(value)
        if vr not in _CHARSET_VRS or b"\x1b" in value:
            return _UNDECIDED
        if not self._encoding:
            return _UNDECIDED
        try:
            return _text(vr, value, self._encoding)
        except (LookupError, UnicodeError):
            return _UNDECIDED  # pydicom's replacement characters, and its warning

    def _pydicom(self) -> Dataset:
        if self._dataset is None:
            self._dataset = _dataset_from_scan(self._scanned, self._encodings)
        return self._dataset


# What a record is read from: a parsed dataset, or a scanned header's values.
Values = Dataset | _ScannedValues
_UNDECIDED = object()
_LATIN = "latin_1"  # pydicom's default_encoding, "iso8859", by its Python codec name
_DEFAULT_ENCODED_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "PN", "LT", "ST", "UT"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _default_encoded(vr: str, value: bytes) -> Any:
    """AE, AS, CS, DA, DT, TM, UI as ``pydicom.values`` decodes them (its default encoding)."""
    text = value.decode(_LATIN)
    if vr == "AE":
        return _one_or_many([part.strip() for part in text.split("\\")])
    if vr == "UI":
        text = text.rstrip("\0 ")
    return _one_or_many(text.rstrip(" \x00").split("\\"))


def _integers(value: bytes) -> Any:
    """IS values that are plain integers, as ints (``_integer`` reads them); else undecided."""
    parts = [part.strip() for part in value.decode(_LATIN).rstrip(" \x00").split("\\")]
    if all(_INTEGER.fullmatch(part) for part in parts):
        return _one_or_many([int(part) for part in parts])
    return _UNDECIDED


def _text(vr: str, value: bytes, encoding: str) -> Any:
    """A text VR in the character set's encoding, as ``pydicom.values`` decodes it."""
    if vr == "PN":
        text = value.rstrip(b"\x00 ").decode(encoding)
        # pydicom drops empty trailing component groups ("=") of a name: left to it
        return _UNDECIDED if "=" in text else _one_or_many(text.split("\\"))
    text = value.decode(encoding)
    if vr in _SINGLE_TEXT_VRS:
        return text.rstrip("\0 ")
    return _one_or_many([part.rstrip("\0 ") for part in text.split("\\")])


def _one_or_many(values: list[_T]) -> _T | list[_T]:
    return values[0] if len(values) == 1 else values


@functools.cache
def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _encodings(scanned: Scan) -> list[str] | None:
    """The Python encodings of the scanned Specific Character Set; None when not understood.

    As pydicom's own reader does: the character set found once, not at every value decoded.
    """
    charset = scanned.elements.get(_SPECIFIC_CHARACTER_SET)
    if charset is None:
        return [default_encoding]
    try:
        return list(convert_encodings(_default_encoded("CS", charset.value)))
    except Exception:  # noqa: BLE001 - left to each value's decoding by pydicom
        return None


def _dataset_from_scan(scanned: Scan, encodings: list[str] | None) -> Dataset:
    """A dataset of the scanned raw values, decoded lazily by pydicom as when it reads a file.

    ``encodings``: the scan's character set (:func:`_encodings`), found once per header.
    """
    elements = (
        RawDataElement(
            Tag(tag),
            raw.vr,
            len(raw.value),
            raw.value,
            raw.offset,
            scanned.implicit,
            scanned.little,
        )
        for tag, raw in scanned.elements.items()
    )
    dataset = Dataset({element.tag: element for element in elements})
    dataset.set_original_encoding(scanned.implicit, scanned.little, encodings or default_encoding)
    return dataset


def record_from_dataset(dataset: Values, transfer_syntax: str | None = None) -> InstanceRecord:
    """Build a record from a parsed dataset (transfer syntax from its File Meta if not given)."""
    uids = {
        keyword: clean_uid(_value(dataset, keyword))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    }
    missing = [keyword for keyword, uid in uids.items() if not uid]
    if missing:
        raise HeaderError(HeaderProblem.MISSING_UID, ", ".join(missing))
    invalid = [keyword for keyword, uid in uids.items() if not is_valid_uid(uid)]
    if invalid:
        raise HeaderError(HeaderProblem.INVALID_UID, ", ".join(invalid))
    if transfer_syntax is None:
        meta = getattr(dataset, "file_meta", None)
        transfer_syntax = _value(meta, "TransferSyntaxUID") if meta else ""
    requests = list(_items(dataset, "RequestAttributesSequence"))
    return InstanceRecord(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=clean_uid(transfer_syntax),
        **_instance_fields(dataset),
        **_series_fields(dataset),
        **_study_fields(dataset, requests),
        **_patient_fields(dataset),
    )


def _instance_fields(dataset: Values) -> dict[str, Any]:
    concept = next(_items(dataset, "ConceptNameCodeSequence"), None)
    return {
        "instance_number": _integer(dataset, "InstanceNumber"),
        "content_label": text_value(dataset, "ContentLabel"),
        "document_title": text_value(dataset, "DocumentTitle"),
        "concept_name": text_value(concept, "CodeMeaning") if concept is not None else "",
        "image_laterality": text_value(dataset, "ImageLaterality"),
        "image_type": text_value(dataset, "ImageType"),
    }


def _series_fields(dataset: Values) -> dict[str, Any]:
    specimens = list(_items(dataset, "SpecimenDescriptionSequence"))
    region = next(_items(dataset, "AnatomicRegionSequence"), None)
    return {
        "modality": text_value(dataset, "Modality"),
        "series_number": _integer(dataset, "SeriesNumber"),
        "series_description": text_value(dataset, "SeriesDescription"),
        "series_date": text_value(dataset, "SeriesDate"),
        "series_time": text_value(dataset, "SeriesTime"),
        "body_part_examined": text_value(dataset, "BodyPartExamined"),
        "laterality": text_value(dataset, "Laterality"),
        "performing_physicians": _texts(dataset, "PerformingPhysicianName"),
        "operators": _texts(dataset, "OperatorsName"),
        "specimens": _present(text_value(item, "SpecimenIdentifier") for item in specimens),
        "specimen_uids": _present(clean_uid(_value(item, "SpecimenUID")) for item in specimens),
        "specimen_issuers": _issued(specimens, "SpecimenIdentifier", _SPECIMEN_ISSUER),
        "anatomic_regions": _codes(dataset, "AnatomicRegionSequence"),
        "anatomic_region_modifiers": _codes(region, "AnatomicRegionModifierSequence"),
        "performing_physician_ids": _staff(
            dataset, "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence"
        ),
        "operator_ids": _staff(dataset, "OperatorsName", "OperatorIdentificationSequence"),
    }


def _study_fields(dataset: Values, requests: list[Dataset]) -> dict[str, Any]:
    sources = [dataset, *requests]
    return {
        "study_date": text_value(dataset, "StudyDate"),
        "study_time": text_value(dataset, "StudyTime"),
        "timezone_offset": text_value(dataset, "TimezoneOffsetFromUTC"),
        "accession_number": text_value(dataset, "AccessionNumber"),
        "accession_issuer": _issuer(next(_items(dataset, "IssuerOfAccessionNumberSequence"), None)),
        "requests": _requests(requests),
        "study_id": text_value(dataset, "StudyID"),
        "study_description": text_value(dataset, "StudyDescription"),
        "study_comments": text_value(dataset, "StudyComments"),
        "requested_procedure_comments": text_value(dataset, "RequestedProcedureComments"),
        "requested_procedure_ids": _present(text_value(s, "RequestedProcedureID") for s in sources),
        "procedure_codes": _codes(dataset, "ProcedureCodeSequence"),
        "requested_procedure_codes": _codes(dataset, "RequestedProcedureCodeSequence"),
        "reason_codes": tuple(
            code
            for source in sources
            for code in _codes(source, "ReasonForRequestedProcedureCodeSequence")
        ),
        "reasons": _present(text_value(s, "ReasonForTheRequestedProcedure") for s in sources),
        "referring_physician": text_value(dataset, "ReferringPhysicianName"),
        "referring_physician_ids": next(
            (
                staff.codes
                for staff in _staff(
                    dataset, "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence"
                )
            ),
            (),
        ),
        "reading_physicians": _texts(dataset, "NameOfPhysiciansReadingStudy"),
        "institution_name": text_value(dataset, "InstitutionName"),
        "department_name": text_value(dataset, "InstitutionalDepartmentName"),
        "admission_id": text_value(dataset, "AdmissionID"),
        "admission_issuer": _issuer(next(_items(dataset, "IssuerOfAdmissionIDSequence"), None)),
        "performed_location": text_value(dataset, "PerformedLocation"),
    }


def _patient_fields(dataset: Values) -> dict[str, Any]:
    qualifiers = next(_items(dataset, "IssuerOfPatientIDQualifiersSequence"), None)
    issuer = Issuer(
        local_id=text_value(dataset, "IssuerOfPatientID"),
        universal_id=text_value(qualifiers, "UniversalEntityID") if qualifiers else "",
        universal_id_type=text_value(qualifiers, "UniversalEntityIDType") if qualifiers else "",
    )
    return {
        "patient_id": text_value(dataset, "PatientID"),
        "patient_id_issuer": issuer if any((issuer.local_id, issuer.universal_id)) else None,
        "patient_name": text_value(dataset, "PatientName"),
        "patient_birth_date": text_value(dataset, "PatientBirthDate"),
        "patient_sex": text_value(dataset, "PatientSex"),
    }


_SPECIMEN_ISSUER = "IssuerOfTheSpecimenIdentifierSequence"


def _requests(items: list[Dataset]) -> tuple[Request, ...]:
    """The distinct request items that name an accession, a requested procedure or its code."""
    requests = (
        Request(
            accession=text_value(item, "AccessionNumber"),
            issuer=_issuer(next(_items(item, "IssuerOfAccessionNumberSequence"), None)),
            procedure_id=text_value(item, "RequestedProcedureID"),
            codes=_codes(item, "RequestedProcedureCodeSequence"),
        )
        for item in items
    )
    return tuple(dict.fromkeys(r for r in requests if r.accession or r.procedure_id or r.codes))


def _issued(items: list[Dataset], keyword: str, issuer_keyword: str) -> tuple[IssuedId, ...]:
    """The distinct identifiers ``keyword`` of ``items``, each with its issuer if it names one."""
    issued = (
        IssuedId(value, _issuer(next(_items(item, issuer_keyword), None)))
        for item in items
        if (value := text_value(item, keyword))
    )
    return tuple(dict.fromkeys(issued))


def _staff(dataset: Values, name_keyword: str, sequence_keyword: str) -> tuple[StaffId, ...]:
    """The people an identification sequence identifies, paired in order with the PN values.

    PS3.3 has the items correspond, in number and order, to the values of the name attribute.
    """
    value = _value(dataset, name_keyword)
    values = value if isinstance(value, MultiValue | list | tuple) else [value or ""]
    names = [_clean(v) for v in values]
    staff = []
    for index, item in enumerate(_items(dataset, sequence_keyword)):
        codes = _codes(item, "PersonIdentificationCodeSequence")
        if codes:
            staff.append(StaffId(names[index] if index < len(names) else "", codes))
    return tuple(staff)


def _issuer(item: Dataset | None) -> Issuer | None:
    if item is None:
        return None
    issuer = Issuer(
        local_id=text_value(item, "LocalNamespaceEntityID"),
        universal_id=text_value(item, "UniversalEntityID"),
        universal_id_type=text_value(item, "UniversalEntityIDType"),
    )
    return issuer if issuer.local_id or issuer.universal_id else None


def _codes(dataset: Values | None, keyword: str) -> tuple[Code, ...]:
    codes = []
    for item in _items(dataset, keyword):
        value = next(
            (
                v
                for k in ("CodeValue", "LongCodeValue", "URNCodeValue")
                if (v := text_value(item, k))
            ),
            "",
        )
        meaning = text_value(item, "CodeMeaning")
        if value or meaning:
            codes.append(
                Code(
                    value=value,
                    scheme=text_value(item, "CodingSchemeDesignator"),
                    meaning=meaning,
                    scheme_uid=clean_uid(_value(item, "CodingSchemeUID")),
                )
            )
    return tuple(codes)


def _items(dataset: Values | None, keyword: str) -> Iterator[Dataset]:
    """The items of a sequence, or nothing when it is absent, empty or malformed."""
    value = _value(dataset, keyword)
    if not value:
        return iter(())
    try:
        return iter([item for item in value if isinstance(item, Dataset)])
    except TypeError:
        return iter(())


def _value(dataset: Values | None, keyword: str) -> Any:
    """The value of ``keyword``, or None when absent or undecodable.

    Looked up by tag: most keywords asked for are absent, and ``Dataset.get`` by keyword finds
    that out by raising and catching an AttributeError (most of the record's reading time).
    """
    if dataset is None:
        return None
    tag = _tag_of(keyword)
    try:
        if isinstance(dataset, _ScannedValues):
            return dataset.value(tag)
        return dataset[tag].value if tag in dataset else None
    except Exception:  # noqa: BLE001 - any decoding failure of an optional value means "absent"
        return None


@functools.cache
def _tag_of(keyword: str) -> BaseTag:
    """The tag of a standard keyword (every keyword this module reads is one)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return Tag(tag)


def _clean(value: Any) -> str:
    return _CONTROL.sub("", str(value)).strip()


def text_value(dataset: Values | None, keyword: str) -> str:
    """A single text value, cleaned; multiple values joined with a backslash."""
    value = _value(dataset, keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_clean(v) for v in value).strip("\\ ")
    return _clean(value)


def _texts(dataset: Values, keyword: str) -> tuple[str, ...]:
    """Every value of a multi-valued text attribute, cleaned, empty ones dropped."""
    value = _value(dataset, keyword)
    if value is None:
        return ()
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return _present(_clean(v) for v in values)


def _present(values: Any) -> tuple[str, ...]:
    """The non-empty values, first occurrence of each, in order."""
    return tuple(dict.fromkeys(v for v in values if v))


def _integer(dataset: Values, keyword: str) -> int | None:
    """An IS/US value as int, or None when absent or not a number."""
    value = _value(dataset, keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
