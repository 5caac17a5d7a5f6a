"""FHIR R4 ImagingStudy mapping: golden output, validity against the official model, determinism."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy

from listener import fhir
from listener.aggregator import Aggregator
from listener.header import HeaderError, read_record
from listener.model import InstanceRecord, StudyState
from tests.support import (
    DICOMDIR_TESTS,
    PYDICOM_CHARSET_FILES,
    PYDICOM_TEST_FILES,
    dicom_files,
)

GOLDEN = Path(__file__).parents[1] / "golden"


def study_of(records: list[InstanceRecord]) -> StudyState:
    aggregator = Aggregator(quiet_period=1)
    for record in records:
        aggregator.add(record, now=0)
    [study_uid] = {r.study_uid for r in records}
    return aggregator.snapshot(study_uid)


def records_of(paths: list[Path]) -> list[InstanceRecord]:
    return [read_record(path) for path in paths]


GOLDEN_CASES = {
    "r4-mr-three-series": (
        DICOMDIR_TESTS / "98892003",
        "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.1",
    ),
    "r4-ct-small": (
        PYDICOM_TEST_FILES / "CT_small.dcm",
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_mapping_matches_golden_file(name: str) -> None:
    """The R4 resource for a known study equals its reviewed golden JSON."""
    source, study_uid = GOLDEN_CASES[name]
    paths = dicom_files(source) if source.is_dir() else [source]
    records = [r for r in records_of(paths) if r.study_uid == study_uid]
    resource = fhir.imaging_study(study_of(records), version=1, fhir_version="R4")
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n")

    assert resource == json.loads(golden.read_text())
    ImagingStudy.model_validate(resource)


def every_pydicom_record() -> list[InstanceRecord]:
    records = []
    for path in dicom_files(PYDICOM_TEST_FILES) + dicom_files(PYDICOM_CHARSET_FILES):
        try:
            records.append(read_record(path))
        except HeaderError:
            continue
    return records


def test_every_pydicom_test_file_maps_to_a_valid_r4_resource() -> None:
    """Each pydicom test file with the identifying UIDs yields a resource the R4 model accepts."""
    records = every_pydicom_record()
    assert len(records) > 80
    for record in records:
        resource = fhir.imaging_study(study_of([record]), version=1, fhir_version="R4")
        ImagingStudy.model_validate(resource)


def test_same_instances_in_any_order_give_identical_bytes() -> None:
    """Arrival order never changes the encoded resource."""
    records = records_of(dicom_files(DICOMDIR_TESTS / "98892003"))
    records = [r for r in records if r.study_uid == records[0].study_uid]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)

    first = fhir.encode(fhir.imaging_study(study_of(records), version=1, fhir_version="R4"))
    second = fhir.encode(fhir.imaging_study(study_of(shuffled), version=1, fhir_version="R4"))

    assert first == second


BASE = InstanceRecord(
    study_uid="1.2.3",
    series_uid="1.2.3.1",
    sop_instance_uid="1.2.3.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    modality="CT",
)


def map_one(**changes: Any) -> dict[str, Any]:
    return fhir.imaging_study(study_of([replace(BASE, **changes)]), version=3, fhir_version="R4")


def test_started_carries_the_time_when_the_offset_is_known() -> None:
    """StudyDate+StudyTime with TimezoneOffsetFromUTC give a full dateTime."""
    resource = map_one(study_date="20240102", study_time="081500", timezone_offset="+0100")

    assert resource["started"] == "2024-01-02T08:15:00+01:00"
    ImagingStudy.model_validate(resource)


def test_started_is_the_date_alone_without_an_offset() -> None:
    """Without a zone a time cannot be expressed in FHIR, so only the date is given."""
    assert map_one(study_date="20240102", study_time="081500")["started"] == "2024-01-02"


def test_subject_without_patient_id_is_still_a_valid_reference() -> None:
    """A missing PatientID yields an explicit unknown-patient reference that validates."""
    resource = map_one(patient_id="")

    assert resource["subject"]["type"] == "Patient"
    assert "identifier" not in resource["subject"]
    ImagingStudy.model_validate(resource)


def test_subject_carries_patient_id_and_issuer() -> None:
    """PatientID becomes the reference's identifier; its issuer is named as assigner."""
    subject = map_one(patient_id="P123", issuer_of_patient_id="HOSP")["subject"]

    assert subject == {
        "type": "Patient",
        "identifier": {"value": "P123", "assigner": {"display": "HOSP"}},
    }


def test_accession_number_is_an_acsn_identifier() -> None:
    """AccessionNumber is an identifier typed v2-0203 ACSN beside the study UID."""
    identifiers = map_one(accession_number="A-77")["identifier"]

    assert identifiers == [
        {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                ]
            },
            "value": "A-77",
        },
    ]


def test_version_is_meta_version_id() -> None:
    """The resource version is carried as meta.versionId."""
    assert map_one()["meta"] == {"versionId": "3"}


def test_series_without_modality_uses_ot() -> None:
    """FHIR requires a series modality; a header without one maps to OT (Other)."""
    resource = map_one(modality="")

    assert resource["series"][0]["modality"]["code"] == "OT"
    ImagingStudy.model_validate(resource)
