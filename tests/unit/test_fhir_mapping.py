"""FHIR ImagingStudy mapping, R4 and R5: golden output, validity, determinism, cleaning rules."""

from __future__ import annotations

import copy
import json
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.imagingstudy import ImagingStudy as R5ImagingStudy
from fhir.resources.R4B.imagingstudy import ImagingStudy as R4ImagingStudy
from pydicom.dataset import Dataset

from listener import fhir
from listener.aggregator import Aggregator
from listener.fhir import FhirOptions
from listener.header import HeaderError, read_record, record_from_dataset
from listener.model import Code, InstanceRecord, StudyState
from tests.support import DICOMDIR_TESTS, PYDICOM_CHARSET_FILES, PYDICOM_TEST_FILES, dicom_files

GOLDEN = Path(__file__).parents[1] / "golden"
MODELS: dict[str, Any] = {"R4": R4ImagingStudy, "R5": R5ImagingStudy}
RELEASES = sorted(MODELS)


def study_of(records: list[InstanceRecord]) -> StudyState:
    aggregator = Aggregator(quiet_period=1)
    for record in records:
        aggregator.add(record, now=0)
    [study_uid] = {r.study_uid for r in records}
    return aggregator.snapshot(study_uid)


def mapped(records: list[InstanceRecord], **options: Any) -> fhir.MappedStudy:
    return fhir.imaging_study(study_of(records), version=1, options=FhirOptions(**options))


def validate(resource: dict[str, Any], release: str) -> None:
    MODELS[release].model_validate(resource)


def rich_dataset() -> Dataset:
    """CT_small with every attribute the mapping reads filled in."""
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm", stop_before_pixels=True)
    dataset.AccessionNumber = "ACC-1001"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "RIS"
    issuer.UniversalEntityID = "1.2.3.4.5"
    issuer.UniversalEntityIDType = "ISO"
    dataset.IssuerOfAccessionNumberSequence = [issuer]
    dataset.IssuerOfPatientID = "HOSP"
    dataset.StudyID = "S-77"
    dataset.StudyComments = "Patient moved during scan"
    dataset.AdmissionID = "ADM-5"
    dataset.ReferringPhysicianName = "Smith^Anna^^Dr"
    dataset.NameOfPhysiciansReadingStudy = ["Jones^Bob", "Lee^Kim"]
    dataset.PerformingPhysicianName = "House^Greg"
    dataset.OperatorsName = "Tech^Tom"
    dataset.InstitutionalDepartmentName = "Radiology"
    dataset.BodyPartExamined = "CHEST"
    dataset.Laterality = "R"
    dataset.SeriesDescription = "Thorax 5mm"
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator = "24627-2", "LN"
    procedure.CodeMeaning = "Chest CT"
    dataset.ProcedureCodeSequence = [procedure]
    reason = Dataset()
    reason.CodeValue, reason.CodingSchemeDesignator = "233604007", "SCT"
    reason.CodeMeaning = "Pneumonia"
    request = Dataset()
    request.RequestedProcedureID = "RP-9"
    request.ReasonForTheRequestedProcedure = "Fever and cough"
    request.ReasonForRequestedProcedureCodeSequence = [reason]
    requested = Dataset()
    requested.CodeValue, requested.CodingSchemeDesignator = "CTCHEST", "99RIS"
    requested.CodeMeaning = "CT Chest with contrast"
    request.RequestedProcedureCodeSequence = [requested]
    grouped = Dataset()
    grouped.AccessionNumber = "ACC-1002"
    grouped.RequestedProcedureID = "RP-10"
    dataset.RequestAttributesSequence = [request, grouped]
    admission_issuer = Dataset()
    admission_issuer.UniversalEntityID = "1.2.3.4.7"
    admission_issuer.UniversalEntityIDType = "ISO"
    dataset.IssuerOfAdmissionIDSequence = [admission_issuer]
    dataset.PerformedLocation = "CT 2"
    referrer_code = Dataset()
    referrer_code.CodeValue, referrer_code.CodingSchemeDesignator = "D-17", "99HOSP"
    referrer_code.CodeMeaning = "Smith^Anna"
    referrer = Dataset()
    referrer.PersonIdentificationCodeSequence = [referrer_code]
    dataset.ReferringPhysicianIdentificationSequence = [referrer]
    dataset.RequestedProcedureComments = "Contrast allergy"
    specimen = Dataset()
    specimen.SpecimenIdentifier = "SPEC-1"
    specimen.SpecimenUID = "1.2.3.4.6"
    dataset.SpecimenDescriptionSequence = [specimen]
    dataset.ContentLabel = "AXIAL"
    return dataset


def golden_cases() -> dict[str, tuple[list[InstanceRecord], dict[str, Any]]]:
    def records(*paths: Path) -> list[InstanceRecord]:
        return [read_record(path) for path in paths]

    mr = [
        r
        for r in records(*dicom_files(DICOMDIR_TESTS / "98892003"))
        if r.study_uid == "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.1"
    ]
    contained = {"subject": "contained"}
    endpoint = {"endpoint_address": "https://pacs.example/dicom-web", "timezone": "Europe/Berlin"}
    return {
        "ct-small": (records(PYDICOM_TEST_FILES / "CT_small.dcm"), {}),
        "ct-rich": ([record_from_dataset(rich_dataset())], {**contained, **endpoint}),
        "mr-three-series": (mr, {}),
        "rt-plan": (records(PYDICOM_TEST_FILES / "rtplan.dcm"), {}),
        "rt-dose-multiframe": (records(PYDICOM_TEST_FILES / "rtdose.dcm"), {}),
        "sr": (records(PYDICOM_TEST_FILES / "test-SR.dcm"), {}),
        "ecg-waveform": (records(PYDICOM_TEST_FILES / "waveform_ecg.dcm"), {}),
        "charset-japanese": (records(PYDICOM_CHARSET_FILES / "chrH31.dcm"), contained),
        "charset-utf8": (records(PYDICOM_CHARSET_FILES / "chrX1.dcm"), contained),
        "charset-gb18030": (records(PYDICOM_CHARSET_FILES / "chrX2.dcm"), contained),
        "charset-korean": (records(PYDICOM_CHARSET_FILES / "chrKoreanMulti.dcm"), contained),
        "charset-latin1": (records(PYDICOM_CHARSET_FILES / "chrFren.dcm"), contained),
    }


GOLDEN_CASES = golden_cases()


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_mapping_matches_golden_file(name: str, release: str) -> None:
    """Each reference study maps to its reviewed golden JSON, which the official model accepts."""
    records, options = GOLDEN_CASES[name]
    resource = mapped(records, version=release, **options).resource
    golden = GOLDEN / f"{release.lower()}-{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n")

    assert resource == json.loads(golden.read_text())
    validate(resource, release)


def every_pydicom_record() -> list[InstanceRecord]:
    records = []
    for path in dicom_files(PYDICOM_TEST_FILES) + dicom_files(PYDICOM_CHARSET_FILES):
        try:
            records.append(read_record(path))
        except HeaderError:
            continue
    return records


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("subject", ["identifier", "contained"])
def test_every_pydicom_test_file_maps_to_a_valid_resource(release: str, subject: str) -> None:
    """Each pydicom test file with the identifying UIDs yields a resource the model accepts."""
    records = every_pydicom_record()
    assert len(records) > 80
    for record in records:
        resource = mapped(
            [record], version=release, subject=subject, endpoint_address="https://pacs/wado"
        ).resource
        validate(resource, release)


@pytest.mark.parametrize("release", RELEASES)
def test_same_instances_in_any_order_give_identical_bytes(release: str) -> None:
    """Arrival order never changes the encoded resource."""
    records, _ = GOLDEN_CASES["mr-three-series"]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)

    first = fhir.encode(mapped(records, version=release).resource)
    second = fhir.encode(mapped(shuffled, version=release).resource)

    assert first == second


BASE = InstanceRecord(
    study_uid="1.2.3",
    series_uid="1.2.3.1",
    sop_instance_uid="1.2.3.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    modality="CT",
)


def map_one(release: str = "R4", options: dict[str, Any] | None = None, **changes: Any) -> Any:
    return mapped([replace(BASE, **changes)], version=release, **(options or {}))


def test_started_carries_the_time_when_the_offset_is_known() -> None:
    """StudyDate+StudyTime with TimezoneOffsetFromUTC give a full dateTime."""
    result = map_one(study_date="20240102", study_time="081500.25", timezone_offset="+0100")

    assert result.resource["started"] == "2024-01-02T08:15:00.25+01:00"


def test_started_uses_the_configured_zone_without_an_offset() -> None:
    """A configured IANA zone supplies the offset, including daylight saving time."""
    winter = map_one(
        options={"timezone": "Europe/Berlin"}, study_date="20240102", study_time="0815"
    )
    summer = map_one(
        options={"timezone": "Europe/Berlin"}, study_date="20240702", study_time="0815"
    )

    assert winter.resource["started"] == "2024-01-02T08:15:00+01:00"
    assert summer.resource["started"] == "2024-07-02T08:15:00+02:00"


def test_started_is_the_date_alone_without_any_zone() -> None:
    """Without a zone a time cannot be expressed in FHIR, so only the date is given."""
    assert map_one(study_date="20240102", study_time="081500").resource["started"] == "2024-01-02"


def test_malformed_study_date_is_omitted_with_a_warning() -> None:
    """A date like 2023013 is dropped and reported; the resource stays valid."""
    result = map_one(study_date="2023013", study_time="101010")

    assert "started" not in result.resource
    assert "StudyDate malformed; omitted" in result.warnings
    validate(result.resource, "R4")


def test_malformed_timezone_offset_is_ignored_with_a_warning() -> None:
    """An offset like +25:00 is not used; the date alone remains."""
    result = map_one(study_date="20240102", study_time="0815", timezone_offset="+2500")

    assert result.resource["started"] == "2024-01-02"
    assert "TimezoneOffsetFromUTC malformed; ignored" in result.warnings


def test_over_long_patient_id_is_kept_and_reported_without_its_value() -> None:
    """A PatientID over 64 characters is kept (identity) and warned about without the value."""
    long_id = "P" * 80
    result = map_one(patient_id=long_id)

    assert result.resource["subject"]["identifier"]["value"] == long_id
    assert result.warnings == ("PatientID longer than 64 characters; kept as sent",)
    assert long_id not in " ".join(result.warnings)


def test_conflicting_study_attributes_latest_received_wins_and_are_reported_once() -> None:
    """Instances disagreeing on a study attribute: the last received wins, one warning, no value."""
    records = [
        replace(BASE, sop_instance_uid=f"1.2.3.1.{n}", instance_number=n, study_description=d)
        for n, d in ((1, "Chest"), (3, "Thorax"), (2, "Abdomen"))
    ]

    result = mapped(records)

    assert result.resource["description"] == "Abdomen"
    assert result.warnings == (
        "study attribute study_description differs between instances; most recently received used",
    )
    assert "Thorax" not in result.warnings[0]


def test_subject_without_patient_id_is_still_a_valid_reference() -> None:
    """A missing PatientID yields an explicit unknown-patient reference that validates."""
    for release in RELEASES:
        resource = map_one(release, patient_id="").resource
        assert resource["subject"]["type"] == "Patient"
        assert "identifier" not in resource["subject"]
        validate(resource, release)


def test_patient_identifier_system_applies_when_no_issuer() -> None:
    """The configured system is used for PatientID when the header names no universal issuer."""
    resource = map_one(
        options={"patient_identifier_system": "urn:oid:1.2.3.99"}, patient_id="P1"
    ).resource

    assert resource["subject"]["identifier"] == {"system": "urn:oid:1.2.3.99", "value": "P1"}


def test_contained_patient_carries_name_birth_date_and_gender() -> None:
    """fhir.subject = contained adds a Patient with decoded names, birthDate and gender."""
    resource = map_one(
        options={"subject": "contained"},
        patient_id="P1",
        patient_name="Yamada^Tarou=山田^太郎",
        patient_birth_date="19800131",
        patient_sex="F",
    ).resource

    [patient] = resource["contained"]
    assert resource["subject"] == {"reference": "#patient", "type": "Patient"}
    assert patient["birthDate"] == "1980-01-31" and patient["gender"] == "female"
    assert [name["text"] for name in patient["name"]] == ["Tarou Yamada", "山田 太郎"]
    validate(resource, "R4")


def test_r5_puts_the_accession_in_based_on_and_drops_interpreter() -> None:
    """R5: accession as a ServiceRequest identifier in basedOn, no interpreter element."""
    r4 = map_one("R4", accession_number="A1", reading_physicians=("Doe^Jo",)).resource
    r5 = map_one("R5", accession_number="A1", reading_physicians=("Doe^Jo",)).resource

    assert r4["interpreter"] == [{"type": "Practitioner", "display": "Jo Doe"}]
    assert "interpreter" not in r5
    [request] = r5["basedOn"]
    assert request["type"] == "ServiceRequest"
    assert request["identifier"]["value"] == "A1"
    assert request["identifier"]["type"]["coding"][0]["code"] == "ACSN"


def test_referenced_endpoint_replaces_the_contained_one() -> None:
    """fhir.endpoint_reference points study and series at an existing Endpoint."""
    resource = map_one(options={"endpoint_reference": "Endpoint/pacs"}).resource

    assert resource["endpoint"] == [{"reference": "Endpoint/pacs", "type": "Endpoint"}]
    assert resource["series"][0]["endpoint"] == resource["endpoint"]
    assert "contained" not in resource


@pytest.mark.parametrize("release", RELEASES)
def test_unknown_body_part_is_kept_as_text_with_a_warning(release: str) -> None:
    """A BodyPartExamined that is not an Annex L term is never dropped silently."""
    result = map_one(release, body_part_examined="LEFTTOE")

    body_site = result.resource["series"][0]["bodySite"]
    assert "LEFTTOE" in json.dumps(body_site)
    assert any("LEFTTOE" in warning for warning in result.warnings)
    validate(result.resource, release)


@pytest.mark.parametrize(("release", "expected"), [("R4", "419465000"), ("R5", "24028007")])
def test_laterality_codes_follow_the_release(release: str, expected: str) -> None:
    """Right laterality is 419465000 in R4's value set and 24028007 (CID 244) in R5."""
    series = map_one(release, laterality="R").resource["series"][0]

    assert expected in json.dumps(series["laterality"])


def test_image_laterality_fills_in_for_series_laterality() -> None:
    """Without (0020,0060) Laterality, ImageLaterality gives the series laterality."""
    series = map_one(image_laterality="L").resource["series"][0]

    assert series["laterality"]["code"] == "419161000"


def test_codes_map_known_schemes_and_keep_unknown_ones_as_text() -> None:
    """LN and SCT codes get their FHIR system; a local scheme keeps code, display and text."""
    result = map_one(
        procedure_codes=(
            Code("24627-2", "LN", "Chest CT"),
            Code("XR-77", "99LOCAL", "Local chest protocol"),
        )
    )

    loinc, local = result.resource["procedureCode"]
    assert loinc["coding"][0]["system"] == "http://loinc.org"
    assert "system" not in local["coding"][0]
    assert local["text"] == "Local chest protocol"


def test_empty_sequences_and_padding_leave_a_valid_resource() -> None:
    """Empty code sequences and NUL-padded UIDs are cleaned by the header reader."""
    dataset = copy.deepcopy(rich_dataset())
    dataset.ProcedureCodeSequence = []
    dataset.SOPInstanceUID = dataset.SOPInstanceUID + "\x00"
    record = record_from_dataset(dataset)

    assert record.procedure_codes == ()
    assert not record.sop_instance_uid.endswith("\x00")
    validate(mapped([record]).resource, "R4")
