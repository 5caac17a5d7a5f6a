"""QIDO-RS searches (PS3.18 10.6) over journal records: matching, grouping, paging.

Pure: the HTTP layer parses the request into a :class:`Search`, the journal supplies candidate
records, and :func:`run` returns the DICOM JSON results.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import datadict

from listener.dicomweb.attributes import (
    BY_NAME,
    COUNTS,
    MODALITIES_IN_STUDY,
    RETRIEVE_URL,
    Attribute,
    Level,
    dataset,
    element,
    levels_up_to,
)
from listener.model import InstanceRecord

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_STRING_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}


class SearchError(ValueError):
    """The query cannot be understood (answered with 400 Bad Request)."""


@dataclass(frozen=True)
class Search:
    """One QIDO-RS request: the level searched, its matching keys and paging."""

    level: Level
    keys: dict[str, str] = field(default_factory=dict)  # keyword -> query value
    modalities_in_study: str = ""
    limit: int | None = None
    offset: int = 0
    ignored: tuple[str, ...] = ()  # query parameters we do not match on (reported in Warning)


def parse(level: Level, params: Iterable[tuple[str, str]]) -> Search:
    """Turn query parameters into a Search; unknown names are errors, not silently dropped."""
    keys: dict[str, str] = {}
    limit, offset, modalities, ignored = None, 0, "", []
    for name, value in params:
        if name in ("limit", "offset"):
            number = _non_negative(name, value)
            limit, offset = (number, offset) if name == "limit" else (limit, number)
        elif name in _CONTROL:
            continue  # we return every attribute we hold; matching is exact or wildcard
        elif name in ("ModalitiesInStudy", MODALITIES_IN_STUDY):
            modalities = value
        elif name in BY_NAME:
            keys[BY_NAME[name].keyword] = value
        elif _looks_like_attribute(name):
            ignored.append(name)
        else:
            raise SearchError(f"unknown query parameter {name!r}")
    return Search(level, keys, modalities, limit, offset, tuple(ignored))


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit():
        raise SearchError(f"{name} must be a non-negative integer")
    return int(value)


def _looks_like_attribute(name: str) -> bool:
    """A DICOM keyword or tag we hold no value for (e.g. InstitutionName): ignored, warned."""
    head = name.split(".", maxsplit=1)[0]
    if datadict.tag_for_keyword(head) is not None:
        return True
    try:
        return len(head) == 8 and datadict.dictionary_has_tag(int(head, 16))
    except ValueError:
        return False


def run(
    search: Search, records: Iterable[InstanceRecord], *, retrieve_base: str
) -> list[dict[str, Any]]:
    """Group matching records at the search's level; one DICOM JSON dataset per group."""
    groups: dict[str, list[InstanceRecord]] = {}
    for record in records:
        groups.setdefault(_group_key(search.level, record), []).append(record)
    results = [
        _result(search.level, members, retrieve_base)
        for members in groups.values()
        if _matches(search, members)
    ]
    end = None if search.limit is None else search.offset + search.limit
    return results[search.offset : end]


def _group_key(level: Level, record: InstanceRecord) -> str:
    if level == "study":
        return record.study_uid
    return record.series_uid if level == "series" else record.sop_instance_uid


def _matches(search: Search, members: list[InstanceRecord]) -> bool:
    first = members[0]
    for keyword, wanted in search.keys.items():
        attribute = BY_NAME[keyword]
        candidates = members if _below(attribute.level, search.level) else [first]
        if not any(matches(attribute, attribute.read(record), wanted) for record in candidates):
            return False
    if search.modalities_in_study:
        wanted_modalities = set(search.modalities_in_study.split(","))
        if not wanted_modalities & {record.modality for record in members}:
            return False
    return True


def _below(attribute_level: Level, level: Level) -> bool:
    """True when an attribute lives below the searched level (any member may match)."""
    order = ("study", "series", "instance")
    return order.index(attribute_level) > order.index(level)


def matches(attribute: Attribute, value: Any, wanted: str) -> bool:
    """PS3.4 C.2.2.2 matching: UID lists, date/time ranges, wildcards, single values."""
    text = "" if value is None else str(value)
    if attribute.vr == "UI":
        return text in wanted.split(",")
    if attribute.vr in ("DA", "TM") and "-" in wanted:
        low, high = wanted.split("-", 1)
        return bool(text) and (not low or text >= low) and (not high or text[: len(high)] <= high)
    if attribute.vr in _STRING_VRS and ("*" in wanted or "?" in wanted):
        return fnmatch.fnmatchcase(_fold(attribute, text), _fold(attribute, wanted))
    return _fold(attribute, text) == _fold(attribute, wanted)


def _fold(attribute: Attribute, text: str) -> str:
    """Person names match case-insensitively (PS3.18 allows it; viewers expect it)."""
    return text.casefold() if attribute.vr == "PN" else text


def _result(level: Level, members: list[InstanceRecord], retrieve_base: str) -> dict[str, Any]:
    first = members[0]
    result = dataset(first, levels_up_to(level))
    if level == "study":
        modalities = sorted({record.modality for record in members if record.modality})
        result[MODALITIES_IN_STUDY] = element("CS", modalities)
        result[COUNTS["NumberOfStudyRelatedSeries"]] = element(
            "IS", len({record.series_uid for record in members})
        )
        result[COUNTS["NumberOfStudyRelatedInstances"]] = element("IS", len(members))
    elif level == "series":
        result[COUNTS["NumberOfSeriesRelatedInstances"]] = element("IS", len(members))
    result[RETRIEVE_URL] = element("UR", retrieve_url(retrieve_base, first, level))
    return dict(sorted(result.items()))


def retrieve_url(base: str, record: InstanceRecord, level: Level) -> str:
    """The WADO-RS URL of the study, series or instance a record belongs to."""
    url = f"{base}/studies/{record.study_uid}"
    if level in ("series", "instance"):
        url += f"/series/{record.series_uid}"
    if level == "instance":
        url += f"/instances/{record.sop_instance_uid}"
    return url


def narrowing(search: Search, path_keys: Mapping[str, str]) -> dict[str, str]:
    """Exact keys the journal can narrow on before matching: path UIDs, PatientID, accession."""
    keys = dict(path_keys)
    for keyword, journal_key in (
        ("PatientID", "patient_id"),
        ("AccessionNumber", "accession_number"),
    ):
        value = search.keys.get(keyword, "")
        if value and "*" not in value and "?" not in value:
            keys[journal_key] = value
    return keys
