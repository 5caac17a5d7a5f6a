"""The DICOM attributes we answer DICOMweb with, read from journal records (never from files).

Each attribute names its tag, VR, the query level it belongs to and how to read it from an
:class:`InstanceRecord`. QIDO-RS matching and the DICOM JSON model (PS3.18 F.2) both use this one
table, so what can be searched is exactly what is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from listener.model import InstanceRecord

Level = str  # "study", "series" or "instance"
LEVELS: tuple[Level, ...] = ("study", "series", "instance")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute: where it lives in the record and how it is encoded."""

    keyword: str
    tag: str  # eight hex digits, as in the DICOM JSON model
    vr: str
    level: Level
    read: Callable[[InstanceRecord], Any]


def _text(name: str) -> Callable[[InstanceRecord], Any]:
    return lambda record: getattr(record, name) or None


def _number(name: str) -> Callable[[InstanceRecord], Any]:
    return lambda record: getattr(record, name)


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("StudyInstanceUID", "0020000D", "UI", "study", _text("study_uid")),
    Attribute("StudyDate", "00080020", "DA", "study", _text("study_date")),
    Attribute("StudyTime", "00080030", "TM", "study", _text("study_time")),
    Attribute("AccessionNumber", "00080050", "SH", "study", _text("accession_number")),
    Attribute("ReferringPhysicianName", "00080090", "PN", "study", _text("referring_physician")),
    Attribute("StudyDescription", "00081030", "LO", "study", _text("study_description")),
    Attribute("PatientName", "00100010", "PN", "study", _text("patient_name")),
    Attribute("PatientID", "00100020", "LO", "study", _text("patient_id")),
    Attribute("PatientBirthDate", "00100030", "DA", "study", _text("patient_birth_date")),
    Attribute("PatientSex", "00100040", "CS", "study", _text("patient_sex")),
    Attribute("StudyID", "00200010", "SH", "study", _text("study_id")),
    Attribute("SeriesInstanceUID", "0020000E", "UI", "series", _text("series_uid")),
    Attribute("Modality", "00080060", "CS", "series", _text("modality")),
    Attribute("SeriesDescription", "0008103E", "LO", "series", _text("series_description")),
    Attribute("SeriesNumber", "00200011", "IS", "series", _number("series_number")),
    Attribute("SeriesDate", "00080021", "DA", "series", _text("series_date")),
    Attribute("SeriesTime", "00080031", "TM", "series", _text("series_time")),
    Attribute("BodyPartExamined", "00180015", "CS", "series", _text("body_part_examined")),
    Attribute("SOPClassUID", "00080016", "UI", "instance", _text("sop_class_uid")),
    Attribute("SOPInstanceUID", "00080018", "UI", "instance", _text("sop_instance_uid")),
    Attribute("InstanceNumber", "00200013", "IS", "instance", _number("instance_number")),
    Attribute(
        "AvailableTransferSyntaxUID", "00083002", "UI", "instance", _text("transfer_syntax_uid")
    ),
)
BY_NAME: dict[str, Attribute] = {
    **{attribute.keyword: attribute for attribute in ATTRIBUTES},
    **{attribute.tag: attribute for attribute in ATTRIBUTES},
}
# Computed over a study's or series' records rather than read from one.
MODALITIES_IN_STUDY = "00080061"
COUNTS = {
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfSeriesRelatedInstances": "00201209",
}
RETRIEVE_URL = "00081190"


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON element; an absent value gives the element with no ``Value``."""
    if value is None or value in ("", []):
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(str(v)) for v in values]}
    return {"vr": vr, "Value": values}


def _person_name(value: str) -> dict[str, str]:
    """DICOM PN ``alphabetic=ideographic=phonetic`` as the JSON model's component groups."""
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
    return {name: text for name, text in groups.items() if text}


def levels_up_to(level: Level) -> tuple[Level, ...]:
    """The levels whose attributes a ``level`` result carries (an instance carries all)."""
    return LEVELS[: LEVELS.index(level) + 1]


def dataset(record: InstanceRecord, levels: Iterable[Level]) -> dict[str, Any]:
    """The record's attributes of ``levels`` in the DICOM JSON model, in tag order."""
    wanted = set(levels)
    found = {
        attribute.tag: element(attribute.vr, attribute.read(record))
        for attribute in ATTRIBUTES
        if attribute.level in wanted
    }
    return dict(sorted(found.items()))
