"""DICOM attributes FHIR maps to ImagingStudy, read from generated datasets, in R4 and R5.

Each attribute is tested alone, then all together; every resource is validated by fhir.resources.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.imagingstudy import ImagingStudy as R5ImagingStudy
from fhir.resources.R4B.imagingstudy import ImagingStudy as R4ImagingStudy
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from listener import fhir
from listener.aggregator import Aggregator
from listener.fhir import FhirOptions
from listener.header import HEADER_TAGS, read_record, record_from_dataset
from listener.model import InstanceRecord
from listener.scan import scan

MODELS: dict[str, Any] = {"R4": R4ImagingStudy, "R5": R5ImagingStudy}
RELEASES = sorted(MODELS)
SCT = "http://snomed.info/sct"


def base() -> Dataset:
    """A minimal MR instance: identifying UIDs and a modality."""
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    dataset.StudyInstanceUID = "1.2.3"
    dataset.SeriesInstanceUID = "1.2.3.1"
    dataset.SOPInstanceUID = "1.2.3.1.1"
    dataset.Modality = "MR"
    return dataset


def item(**attributes: Any) -> Dataset:
    result = Dataset()
    for keyword, value in attributes.items():
        setattr(result, keyword, value)
    return result


def code(value: str, scheme: str, meaning: str, **more: Any) -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning, **more)


def issuer(universal_id: str, local: str = "") -> Dataset:
    found = item(UniversalEntityID=universal_id, UniversalEntityIDType="ISO")
    if local:
        found.LocalNamespaceEntityID = local
    return found


def mapped(dataset: Dataset, release: str) -> dict[str, Any]:
    """Header -> record -> study -> resource, validated against the release's model."""
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record_from_dataset(dataset), now=0)
    resource = fhir.imaging_study(
        aggregator.snapshot("1.2.3"), version=1, options=FhirOptions(version=release)
    ).resource
    MODELS[release].model_validate(resource)
    return resource


def with_request_accessions(dataset: Dataset) -> Dataset:
    dataset.AccessionNumber = "A1"
    dataset.RequestAttributesSequence = [
        item(AccessionNumber="A1", RequestedProcedureID="RP1"),
        item(
            AccessionNumber="A2",
            IssuerOfAccessionNumberSequence=[issuer("1.2.40.7", "RIS2")],
            RequestedProcedureID="RP2",
        ),
        item(AccessionNumber="A3"),
    ]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_every_request_accession_is_a_based_on_service_request(release: str) -> None:
    """Grouped procedures: one ServiceRequest per distinct accession, each with its issuer."""
    resource = mapped(with_request_accessions(base()), release)

    accessions = [
        request["identifier"]
        for request in resource["basedOn"]
        if "coding" in request["identifier"].get("type", {})
    ]
    assert [a["value"] for a in accessions] == ["A1", "A2", "A3"]
    assert "system" not in accessions[0]
    assert accessions[1]["system"] == "urn:oid:1.2.40.7"
    assert accessions[1]["assigner"] == {"display": "RIS2"}


def with_requested_procedure_code(dataset: Dataset) -> Dataset:
    dataset.RequestedProcedureCodeSequence = [code("RPID17", "99RIS", "MR Knee")]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_requested_procedure_code_fills_the_procedure(release: str) -> None:
    """Without ProcedureCodeSequence, RequestedProcedureCodeSequence gives the procedure code."""
    resource = mapped(with_requested_procedure_code(base()), release)

    [procedure] = resource["procedure"] if release == "R5" else resource["procedureCode"]
    concept = procedure["concept"] if release == "R5" else procedure
    assert concept["coding"][0]["code"] == "RPID17" and concept["text"] == "MR Knee"


@pytest.mark.parametrize("release", RELEASES)
def test_each_request_is_displayed_as_its_requested_procedure(release: str) -> None:
    """A request item's code meaning displays its accession's and procedure ID's ServiceRequest."""
    dataset = with_request_accessions(base())
    first, second, _ = dataset.RequestAttributesSequence
    first.RequestedProcedureCodeSequence = [code("RPID17", "99RIS", "MR Knee")]
    second.RequestedProcedureCodeSequence = [code("RPID18", "99RIS", "MR Hip")]

    based_on = mapped(dataset, release)["basedOn"]

    displays = {r["identifier"]["value"]: r.get("display") for r in based_on}
    assert displays == {
        "A1": "MR Knee",
        "A2": "MR Hip",
        "A3": None,
        "RP1": "MR Knee",
        "RP2": "MR Hip",
    }


@pytest.mark.parametrize("release", RELEASES)
def test_performed_procedure_code_wins_over_the_requested_one(release: str) -> None:
    """ProcedureCodeSequence (what was performed) is used when both are sent."""
    dataset = with_requested_procedure_code(base())
    dataset.ProcedureCodeSequence = [code("24627-2", "LN", "Chest CT")]

    resource = mapped(dataset, release)

    [procedure] = resource["procedure"] if release == "R5" else resource["procedureCode"]
    assert "24627-2" in json.dumps(procedure) and "RPID17" not in json.dumps(procedure)


def with_admission_issuer(dataset: Dataset) -> Dataset:
    dataset.AdmissionID = "ADM-5"
    dataset.IssuerOfAdmissionIDSequence = [issuer("1.2.40.9", "ADT")]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_admission_issuer_is_the_encounter_identifier_system(release: str) -> None:
    """IssuerOfAdmissionIDSequence names the system of the encounter identifier."""
    encounter = mapped(with_admission_issuer(base()), release)["encounter"]

    assert encounter["identifier"] == {
        "system": "urn:oid:1.2.40.9",
        "value": "ADM-5",
        "assigner": {"display": "ADT"},
    }


def with_performed_location(dataset: Dataset) -> Dataset:
    dataset.PerformedLocation = "MR Room 2"
    dataset.InstitutionName = "General Hospital"
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_performed_location_names_the_location(release: str) -> None:
    """PerformedLocation leads the location display, before department and institution."""
    location = mapped(with_performed_location(base()), release)["location"]

    assert location == {"type": "Location", "display": "MR Room 2, General Hospital"}


def with_specimen_issuer(dataset: Dataset) -> Dataset:
    dataset.SpecimenDescriptionSequence = [
        item(
            SpecimenIdentifier="SPEC-1",
            SpecimenUID="1.2.3.4.6",
            IssuerOfTheSpecimenIdentifierSequence=[issuer("1.2.40.11", "LIS")],
        )
    ]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_specimen_issuer_is_the_specimen_identifier_system(release: str) -> None:
    """IssuerOfTheSpecimenIdentifierSequence names the specimen identifier's system."""
    [specimen] = mapped(with_specimen_issuer(base()), release)["series"][0]["specimen"]

    assert specimen["identifier"]["system"] == "urn:oid:1.2.40.11"
    assert specimen["identifier"]["value"] == "SPEC-1"


def with_anatomic_region(dataset: Dataset) -> Dataset:
    dataset.BodyPartExamined = "ABDOMEN"
    dataset.AnatomicRegionSequence = [
        code(
            "T-71000",
            "SRT",
            "Kidney",
            AnatomicRegionModifierSequence=[code("G-A101", "SRT", "Left")],
        )
    ]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_anatomic_region_is_preferred_over_body_part_examined(release: str) -> None:
    """AnatomicRegionSequence (SRT made SNOMED CT) is the bodySite; its modifier gives the side."""
    series = mapped(with_anatomic_region(base()), release)["series"][0]

    body_site = series["bodySite"]["concept"] if release == "R5" else series["bodySite"]
    single = body_site["coding"][0] if release == "R5" else body_site
    assert single == {"system": SCT, "code": "64033007", "display": "Kidney"}
    if release == "R5":
        assert body_site["text"] == "Kidney (Left)"
    left = {"R4": "419161000", "R5": "7771000"}[release]
    assert left in json.dumps(series["laterality"])


PERSON_CODE = "PersonIdentificationCodeSequence"


def with_staff_identification(dataset: Dataset) -> Dataset:
    dataset.ReferringPhysicianName = "Smith^Anna"
    dataset.ReferringPhysicianIdentificationSequence = [
        item(**{PERSON_CODE: [code("D-17", "99HOSP", "Smith^Anna", CodingSchemeUID="1.2.40.5")]})
    ]
    dataset.PerformingPhysicianName = ["House^Greg", "Grey^Meredith"]
    dataset.PerformingPhysicianIdentificationSequence = [
        item(**{PERSON_CODE: [code("P-1", "99HOSP", "House")]}),
        item(**{PERSON_CODE: [code("P-2", "99HOSP", "Grey")]}),
    ]
    dataset.OperatorIdentificationSequence = [
        item(**{PERSON_CODE: [code("T-9", "99HOSP", "Tech")]})
    ]
    return dataset


@pytest.mark.parametrize("release", RELEASES)
def test_staff_identification_sequences_identify_the_practitioners(release: str) -> None:
    """Referring, performing and operator identification codes become practitioner identifiers."""
    resource = mapped(with_staff_identification(base()), release)

    assert resource["referrer"] == {
        "type": "Practitioner",
        "identifier": {
            "system": "urn:oid:1.2.40.5",
            "value": "D-17",
            "assigner": {"display": "99HOSP"},
        },
        "display": "Anna Smith",
    }
    actors = [performer["actor"] for performer in resource["series"][0]["performer"]]
    assert [(a.get("display"), a["identifier"]["value"]) for a in actors] == [
        ("Greg House", "P-1"),
        ("Meredith Grey", "P-2"),
        (None, "T-9"),
    ]


ALL = [
    with_request_accessions,
    with_requested_procedure_code,
    with_admission_issuer,
    with_performed_location,
    with_specimen_issuer,
    with_anatomic_region,
    with_staff_identification,
]


@pytest.mark.parametrize("release", RELEASES)
def test_all_fields_together_map_and_validate(release: str, tmp_path: Path) -> None:
    """Every field at once, read from a file by pydicom and by the single-pass walk, alike."""
    dataset = base()
    for add in ALL:
        dataset = add(dataset)
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "all.dcm"
    dataset.save_as(path, enforce_file_format=True)
    walked = scan(str(path), HEADER_TAGS)

    from_pydicom, from_walk = read_record(path), read_record(path, walked)
    assert walked.usable and from_pydicom == from_walk
    resource = mapped(pydicom.dcmread(path), release)
    assert len(resource["basedOn"]) == 5 and resource["encounter"]["identifier"]["system"]
    assert resource["series"][0]["instance"][0]["title"] == "ORIGINAL\\PRIMARY"


def test_new_record_fields_survive_the_journal_encoding() -> None:
    """A record with every new field comes back equal from its JSON form."""
    dataset = base()
    for add in ALL:
        dataset = add(dataset)
    record = record_from_dataset(dataset)
    assert record.requests and record.operator_ids and record.anatomic_regions

    assert InstanceRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_old_journal_rows_without_the_new_fields_still_load() -> None:
    """A record stored before these fields existed loads, with the fields empty."""
    old = {
        "study_uid": "1.2.3",
        "series_uid": "1.2.3.1",
        "sop_instance_uid": "1.2.3.1.1",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
        "accession_issuer": {"local_id": "RIS", "universal_id": "", "universal_id_type": ""},
        "procedure_codes": [{"value": "1", "scheme": "LN", "meaning": "x", "scheme_uid": ""}],
    }

    record = InstanceRecord.from_json(old)

    assert record.requests == () and record.admission_issuer is None
    assert record.accession_issuer is not None and record.accession_issuer.local_id == "RIS"
