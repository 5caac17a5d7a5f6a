"""QIDO-RS matching over journal records: ranges, wildcards, UID lists, levels and paging."""

from __future__ import annotations

import pytest

from listener.dicomweb import qido
from listener.model import InstanceRecord

BASE = "http://127.0.0.1:8080/dicomweb"


def record(sop: str, **fields: object) -> InstanceRecord:
    values: dict[str, object] = {
        "study_uid": "1.2.3",
        "series_uid": "1.2.3.1",
        "sop_instance_uid": sop,
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "modality": "CT",
        "study_date": "20240315",
        "patient_name": "Doe^Jane",
        "patient_id": "P1",
        **fields,
    }
    return InstanceRecord(**values)  # type: ignore[arg-type]


RECORDS = [
    record("1.2.3.1.1"),
    record("1.2.3.1.2"),
    record("1.2.3.2.1", series_uid="1.2.3.2", modality="SR"),
    record(
        "1.2.4.1.1",
        study_uid="1.2.4",
        series_uid="1.2.4.1",
        study_date="20231231",
        patient_name="Roe^Richard",
        patient_id="P2",
        modality="MR",
    ),
]


def studies(**params: str) -> list[str]:
    search = qido.parse("study", params.items())
    return [item["0020000D"]["Value"][0] for item in qido.run(search, RECORDS, retrieve_base=BASE)]


def test_no_keys_return_each_study_once_with_its_counts() -> None:
    """A study search groups instances: one result per study, series and instance counts."""
    results = qido.run(qido.parse("study", []), RECORDS, retrieve_base=BASE)

    assert [r["0020000D"]["Value"] for r in results] == [["1.2.3"], ["1.2.4"]]
    assert results[0]["00201206"]["Value"] == [2]
    assert results[0]["00201208"]["Value"] == [3]
    assert results[0]["00080061"]["Value"] == ["CT", "SR"]
    assert results[0]["00081190"]["Value"] == [f"{BASE}/studies/1.2.3"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240315", ["1.2.3"]),
        ("20240101-20241231", ["1.2.3"]),
        ("-20231231", ["1.2.4"]),
        ("20231231-", ["1.2.3", "1.2.4"]),
        ("19990101-19991231", []),
    ],
)
def test_study_date_matches_single_values_and_ranges(value: str, expected: list[str]) -> None:
    """StudyDate: a single date, a closed range, and ranges open at either end."""
    assert studies(StudyDate=value) == expected


def test_person_names_match_wildcards_case_insensitively() -> None:
    """PatientName with * and ? matches regardless of case."""
    assert studies(PatientName="doe*") == ["1.2.3"]
    assert studies(PatientName="R?e^*") == ["1.2.4"]


def test_uid_lists_and_tags_are_accepted_as_keys() -> None:
    """A comma-separated UID list matches any of them; a key may be a tag instead of a keyword."""
    assert studies(StudyInstanceUID="1.2.4,9.9.9") == ["1.2.4"]
    assert studies(**{"00100020": "P1"}) == ["1.2.3"]


def test_modalities_in_study_matches_any_series_modality() -> None:
    """ModalitiesInStudy matches a study when any of its series has one of the modalities."""
    assert studies(ModalitiesInStudy="SR") == ["1.2.3"]
    assert studies(ModalitiesInStudy="MR,US") == ["1.2.4"]


def test_series_level_keys_filter_series_results() -> None:
    """A series search by Modality returns only the series of that modality, with its count."""
    search = qido.parse("series", [("Modality", "CT")])

    results = qido.run(search, RECORDS, retrieve_base=BASE)

    assert [r["0020000E"]["Value"] for r in results] == [["1.2.3.1"]]
    assert results[0]["00201209"]["Value"] == [2]


def test_limit_and_offset_page_the_results() -> None:
    """Offset skips results, limit caps them."""
    assert studies(limit="1") == ["1.2.3"]
    assert studies(limit="1", offset="1") == ["1.2.4"]
    assert studies(offset="2") == []


def test_unknown_parameters_are_errors_and_unheld_attributes_are_reported() -> None:
    """A name that is no DICOM attribute is a SearchError; a real one we do not hold is ignored."""
    with pytest.raises(qido.SearchError):
        qido.parse("study", [("NoSuchAttributeAtAll", "1")])
    with pytest.raises(qido.SearchError):
        qido.parse("study", [("limit", "-1")])

    assert qido.parse("study", [("InstitutionName", "X")]).ignored == ("InstitutionName",)


def test_person_names_are_encoded_as_json_component_groups() -> None:
    """PN values use the DICOM JSON model's Alphabetic/Ideographic/Phonetic groups."""
    named = record("1.2.5.1", study_uid="1.2.5", patient_name="Yamada^Tarou=山田^太郎")

    result = qido.run(qido.parse("study", []), [named], retrieve_base=BASE)[0]

    assert result["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
