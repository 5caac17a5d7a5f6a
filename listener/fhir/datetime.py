"""DICOM DA/TM/offset values to FHIR date and dateTime strings.

FHIR allows a time only together with a zone, so a time without a known offset is dropped and the
date alone is returned. Malformed values yield None instead of an invalid resource.
"""

from __future__ import annotations

import datetime
import re

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
    """TimezoneOffsetFromUTC ``+HHMM`` to ``+HH:MM``; None if malformed or out of range."""
    match = _OFFSET.fullmatch(dicom_offset.strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    return f"{sign}{hours}:{minutes}"


def _fhir_time(dicom_time: str) -> str | None:
    """``HH[MM[SS[.F{1,6}]]]`` to ``hh:mm:ss[.fff]``; None if malformed."""
    match = _TIME.fullmatch(dicom_time.strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        return None
    text = f"{hours}:{minutes or '00'}:{seconds or '00'}"
    return f"{text}.{fraction}" if fraction else text


def fhir_datetime(dicom_date: str, dicom_time: str, dicom_offset: str) -> str | None:
    """A DICOM date, time and UTC offset as a FHIR dateTime (the date alone without an offset)."""
    date = fhir_date(dicom_date)
    if date is None:
        return None
    time, offset = _fhir_time(dicom_time), fhir_offset(dicom_offset)
    if time is None or offset is None:
        return date
    return f"{date}T{time}{offset}"
