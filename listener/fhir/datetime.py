"""DICOM DA/TM/offset values to FHIR date and dateTime strings.

FHIR allows a time only together with a zone. The zone comes from TimezoneOffsetFromUTC, else
from a configured IANA time zone; without either, the date alone is returned. Malformed values
yield None instead of an invalid resource.
"""

from __future__ import annotations

import datetime
import re
from zoneinfo import ZoneInfo

_TIME = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def fhir_date(dicom_date: str) -> str | None:
    """``YYYYMMDD`` (or legacy ``YYYY.MM.DD``) to ``YYYY-MM-DD``; None if it is not a real date."""
    digits = dicom_date.strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        return datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()
    except ValueError:
        return None


def fhir_offset(dicom_offset: str) -> str | None:
    """TimezoneOffsetFromUTC ``+HHMM`` to ``+HH:MM``; None if malformed or outside FHIR's range.

    FHIR's dateTime allows offsets from -13:59 to +14:00 (``(0[0-9]|1[0-3]):[0-5][0-9]|14:00``);
    DICOM allows -12:00 to +14:00 with any minutes, so e.g. +14:30 has no FHIR form.
    """
    match = _OFFSET.fullmatch(dicom_offset.strip())
    if match is None or offset_problem(dicom_offset):
        return None
    sign, hours, minutes = match.groups()
    return f"{sign}{hours}:{minutes}"


def offset_problem(dicom_offset: str) -> str | None:
    """Why a TimezoneOffsetFromUTC cannot be used ("malformed", "outside FHIR's range"), or None."""
    match = _OFFSET.fullmatch(dicom_offset.strip())
    if not match or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        return "malformed"
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or (hours == 14 and minutes > 0):
        return "outside FHIR's range"
    return None


def _fhir_time(dicom_time: str) -> str | None:
    """``HH[MM[SS[.F{1,6}]]]`` to ``hh:mm:ss[.ffffff]``; None if malformed."""
    match = _TIME.fullmatch(dicom_time.strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        return None
    text = f"{hours}:{minutes or '00'}:{seconds or '00'}"
    return f"{text}.{fraction}" if fraction else text


def _zone_offset(date: str, time: str, zone: str) -> str | None:
    """The UTC offset of ``zone`` at that local date and time, as ``+HH:MM``."""
    local = datetime.datetime.fromisoformat(f"{date}T{time[:5]}").replace(tzinfo=ZoneInfo(zone))
    offset = local.utcoffset()
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def fhir_datetime(
    dicom_date: str, dicom_time: str, dicom_offset: str, *, zone: str = ""
) -> str | None:
    """A DICOM date, time and UTC offset as a FHIR dateTime (the date alone without a zone)."""
    date = fhir_date(dicom_date)
    if date is None:
        return None
    time = _fhir_time(dicom_time)
    if time is None:
        return date
    offset = fhir_offset(dicom_offset)
    if offset is None and zone and not dicom_offset.strip():
        offset = _zone_offset(date, time, zone)
    return f"{date}T{time}{offset}" if offset else date


def started(
    date: str,
    time: str,
    offset: str,
    *,
    zone: str,
    warnings: list[str],
    name: str = "StudyDate",
) -> str | None:
    """``started`` of a study or series; a malformed date is dropped and noted in ``warnings``."""
    if date and fhir_date(date) is None:
        warnings.append(f"{name} malformed; omitted")
        return None
    return fhir_datetime(date, time, offset, zone=zone) if date else None
