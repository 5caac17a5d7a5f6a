"""DICOM dates, times and offsets become valid FHIR dates and dateTimes, or nothing."""

from __future__ import annotations

import pytest

from listener.fhir.datetime import fhir_date, fhir_datetime, fhir_offset


@pytest.mark.parametrize(
    ("date", "time", "offset", "expected"),
    [
        ("20230115", "101500", "+0100", "2023-01-15T10:15:00+01:00"),
        ("20230115", "1015", "-0500", "2023-01-15T10:15:00-05:00"),
        ("20230115", "101500.123456", "+0000", "2023-01-15T10:15:00.123456+00:00"),
        ("20230115", "10:15:30", "+0530", "2023-01-15T10:15:30+05:30"),
        ("20230115", "101500", "", "2023-01-15"),
        ("20230115", "", "+0100", "2023-01-15"),
        ("20230115", "251500", "+0100", "2023-01-15"),
        ("2023013", "101500", "+0100", None),
        ("20230230", "101500", "+0100", None),
        ("", "101500", "+0100", None),
        ("2023.01.15", "", "", "2023-01-15"),
    ],
)
def test_fhir_datetime(date: str, time: str, offset: str, expected: str | None) -> None:
    """A time needs a known offset; malformed dates give nothing."""
    assert fhir_datetime(date, time, offset) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("+0100", "+01:00"), ("-1200", "-12:00"), ("+1500", None), ("0100", None), ("+01", None)],
)
def test_fhir_offset(value: str, expected: str | None) -> None:
    """TimezoneOffsetFromUTC is accepted only in its +HHMM form within range."""
    assert fhir_offset(value) == expected


def test_fhir_date_rejects_impossible_dates() -> None:
    """A date that does not exist on the calendar is dropped."""
    assert fhir_date("20231301") is None
    assert fhir_date("20240229") == "2024-02-29"
