"""DICOM dates, times and offsets become valid FHIR dates and dateTimes, or nothing."""

from __future__ import annotations

import re

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
    [
        ("+0100", "+01:00"),
        ("-1200", "-12:00"),
        ("+1400", "+14:00"),
        ("+1430", None),
        ("+1500", None),
        ("0100", None),
        ("+01", None),
    ],
)
def test_fhir_offset(value: str, expected: str | None) -> None:
    """TimezoneOffsetFromUTC is accepted only in its +HHMM form within range."""
    assert fhir_offset(value) == expected


def test_fhir_date_rejects_impossible_dates() -> None:
    """A date that does not exist on the calendar is dropped."""
    assert fhir_date("20231301") is None
    assert fhir_date("20240229") == "2024-02-29"


# FHIR R4/R5 dateTime (R5 is the same for offsets): zones stop at -13:59 and +14:00.
FHIR_DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)


def test_every_offset_gives_a_fhir_datetime() -> None:
    """Each +/-HHMM up to 14:59 gives a valid dateTime, with the zone exactly when FHIR has it."""
    for sign in "+-":
        for hours in range(15):
            for minutes in range(60):
                offset = f"{sign}{hours:02d}{minutes:02d}"
                result = fhir_datetime("20240102", "081500", offset)
                assert result is not None and FHIR_DATETIME.fullmatch(result), offset
                in_fhir_range = hours < 14 or minutes == 0
                assert result.endswith(f"{offset[:3]}:{offset[3:]}") is in_fhir_range, offset
