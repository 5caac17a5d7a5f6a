"""Read a received instance's header into an InstanceRecord, never touching its pixel data.

Parsing stops before Pixel Data and defers any other large value, so memory does not grow with the
size of the instance. Every attribute is read defensively: a malformed optional value becomes empty
instead of failing the whole instance; only a missing or invalid identifying UID rejects it.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from listener.model import InstanceRecord

# Values larger than this are not read into memory while parsing (pydicom reads them on access).
_DEFER_SIZE = 64 * 1024
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_MAX_LENGTH = 64


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


def read_record(path: Path) -> InstanceRecord:
    """Parse the header of the DICOM file at ``path`` into a record (file and size left unset)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, defer_size=_DEFER_SIZE)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError) as exc:
        raise HeaderError(HeaderProblem.NOT_DICOM, type(exc).__name__) from None
    return record_from_dataset(dataset)


def record_from_dataset(dataset: Dataset) -> InstanceRecord:
    """Build a record from an already parsed dataset."""
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
    meta = getattr(dataset, "file_meta", None)
    return InstanceRecord(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=clean_uid(_value(meta, "TransferSyntaxUID")) if meta else "",
        instance_number=_integer(dataset, "InstanceNumber"),
        modality=_text(dataset, "Modality"),
        series_number=_integer(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        series_date=_text(dataset, "SeriesDate"),
        series_time=_text(dataset, "SeriesTime"),
        study_date=_text(dataset, "StudyDate"),
        study_time=_text(dataset, "StudyTime"),
        timezone_offset=_text(dataset, "TimezoneOffsetFromUTC"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_description=_text(dataset, "StudyDescription"),
        patient_id=_text(dataset, "PatientID"),
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
    )


def _value(dataset: Dataset | None, keyword: str) -> Any:
    """The value of ``keyword``, or None when absent or undecodable."""
    if dataset is None:
        return None
    try:
        return dataset.get(keyword)
    except Exception:  # noqa: BLE001 - any decoding failure of an optional value means "absent"
        return None


def _text(dataset: Dataset, keyword: str) -> str:
    """A single text value, stripped of padding; multiple values joined with a backslash."""
    value = _value(dataset, keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value).strip("\\ ")
    return str(value).strip().rstrip("\x00").strip()


def _integer(dataset: Dataset, keyword: str) -> int | None:
    """An IS/US value as int, or None when absent or not a number."""
    value = _value(dataset, keyword)
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
