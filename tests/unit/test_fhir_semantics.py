"""ImagingStudy semantics a terminology-aware FHIR server checks: R4/R5 rules and code systems."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fhir.resources.imagingstudy import ImagingStudy as R5ImagingStudy
from fhir.resources.R4B.imagingstudy import ImagingStudy as R4ImagingStudy
from hypothesis import given
from hypothesis import strategies as st

from listener import fhir
from listener.aggregator import Aggregator
from listener.fhir import FhirOptions
from listener.fhir.common import CODING_SYSTEMS, DATA_ABSENT_REASON
from listener.model import Code, InstanceRecord, StudyState

MODELS: dict[str, Any] = {"R4": R4ImagingStudy, "R5": R5ImagingStudy}
RELEASES = sorted(MODELS)
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"

BASE = InstanceRecord(
    study_uid="1.2.3",
    series_uid="1.2.3.1",
    sop_instance_uid="1.2.3.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
    modality="MR",
)


def study_of(records: list[InstanceRecord]) -> StudyState:
    aggregator = Aggregator(quiet_period=1)
    for record in records:
        aggregator.add(record, now=0)
    return aggregator.snapshot(records[0].study_uid)


def mapped(records: list[InstanceRecord], release: str, **options: Any) -> fhir.MappedStudy:
    result = fhir.imaging_study(
        study_of(records), version=1, options=FhirOptions(version=release, **options)
    )
    MODELS[release].model_validate(result.resource)
    return result


def one(release: str, **changes: Any) -> dict[str, Any]:
    return mapped([replace(BASE, **changes)], release).resource


def series_with(modality: str, number: int) -> InstanceRecord:
    return replace(
        BASE,
        series_uid=f"1.2.3.{number}",
        sop_instance_uid=f"1.2.3.{number}.1",
        series_number=number,
        modality=modality,
    )


STUDY_OF_MIXED_MODALITIES = [
    series_with("CT", 1),
    series_with("SR", 2),
    series_with("RTPLAN", 3),
    series_with("OT", 4),
    series_with("PT", 5),
]


def test_r4_study_modality_lists_only_acquisition_modalities() -> None:
    """R4: study modality holds the CID 29 acquisition modalities; SR, RTPLAN, OT stay on series."""
    resource = mapped(STUDY_OF_MIXED_MODALITIES, "R4").resource

    assert [coding["code"] for coding in resource["modality"]] == ["CT", "PT"]
    assert [s["modality"]["code"] for s in resource["series"]] == ["CT", "SR", "RTPLAN", "OT", "PT"]


def test_r5_study_modality_lists_every_series_modality() -> None:
    """R5 redefined study modality as all distinct series modalities."""
    resource = mapped(STUDY_OF_MIXED_MODALITIES, "R5").resource

    codes = [concept["coding"][0]["code"] for concept in resource["modality"]]
    assert codes == ["CT", "OT", "PT", "RTPLAN", "SR"]


def test_r4_study_of_only_derived_objects_has_no_study_modality() -> None:
    """An SR-only study has no acquisition modality: R4 leaves modality out (it is 0..*)."""
    resource = mapped([series_with("SR", 1)], "R4").resource

    assert "modality" not in resource
    assert resource["series"][0]["modality"]["code"] == "SR"


def test_coding_systems_are_the_hl7_terminology_canonical_uris() -> None:
    """Every designator maps to the canonical URL HL7 Terminology (THO) gives its code system."""
    assert CODING_SYSTEMS == {
        "SCT": "http://snomed.info/sct",
        "LN": "http://loinc.org",
        "DCM": "http://dicom.nema.org/resources/ontology/DCM",
        "UCUM": "http://unitsofmeasure.org",
        "RADLEX": "http://radlex.org",
        "NCIt": NCIT,
        "I10": "http://hl7.org/fhir/sid/icd-10",
        "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
        "C4": "http://www.ama-assn.org/go/cpt",
        "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    }


@pytest.mark.parametrize("release", RELEASES)
def test_ncit_codes_carry_the_tho_ncit_uri(release: str) -> None:
    """An NCIt reason code is emitted in NCI Thesaurus's THO canonical system."""
    resource = one(release, reason_codes=(Code("C17998", "NCIt", "Unknown"),))

    reason = resource["reason"][0]["concept"] if release == "R5" else resource["reasonCode"][0]
    assert reason["coding"][0]["system"] == NCIT


@pytest.mark.parametrize("release", RELEASES)
def test_legacy_srt_codes_become_snomed_ct(release: str) -> None:
    """An SRT code becomes its SNOMED CT code (pydicom's table), not a code without system."""
    resource = one(release, reason_codes=(Code("T-D3000", "SRT", "Chest"),))

    reason = resource["reason"][0]["concept"] if release == "R5" else resource["reasonCode"][0]
    assert reason["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "51185008",
        "display": "Chest",
    }


@pytest.mark.parametrize("release", RELEASES)
def test_offset_beyond_fhir_range_is_ignored_with_a_warning(release: str) -> None:
    """TimezoneOffsetFromUTC +1430 is valid DICOM but not FHIR: the date alone, and a warning."""
    result = mapped(
        [replace(BASE, study_date="20240102", study_time="0815", timezone_offset="+1430")], release
    )

    assert result.resource["started"] == "2024-01-02"
    assert "TimezoneOffsetFromUTC outside FHIR's range; ignored" in result.warnings


dicom_offsets = st.builds(
    lambda sign, hours, minutes: f"{sign}{hours:02d}{minutes:02d}",
    st.sampled_from("+-"),
    st.integers(0, 14),
    st.integers(0, 59),
)


@given(dicom_offsets, st.sampled_from(RELEASES))
def test_every_dicom_offset_gives_a_valid_started(offset: str, release: str) -> None:
    """For every +/-HHMM up to 14:59, started is valid and carries the offset iff FHIR allows it."""
    result = mapped(
        [replace(BASE, study_date="20240102", study_time="0815", timezone_offset=offset)], release
    )

    hours, minutes = int(offset[1:3]), int(offset[3:])
    in_fhir_range = hours < 14 or (hours == 14 and minutes == 0)
    expected = f"2024-01-02T08:15:00{offset[:3]}:{offset[3:]}" if in_fhir_range else "2024-01-02"
    assert result.resource["started"] == expected
    assert bool(result.warnings) is not in_fhir_range


@pytest.mark.parametrize("field", ["laterality", "image_laterality"])
@pytest.mark.parametrize("release", RELEASES)
def test_unpaired_laterality_is_left_out(release: str, field: str) -> None:
    """DICOM U means unpaired, not Unilateral: no series laterality in R4 or R5."""
    series = one(release, **{field: "U"})["series"][0]

    assert "laterality" not in series


def test_r5_accession_is_in_based_on_only() -> None:
    """R5 maps AccessionNumber to basedOn alone; identifier holds the Study UID and Study ID."""
    resource = one("R5", accession_number="A1", study_id="S1")

    assert [i.get("type", {}).get("text") for i in resource["identifier"]] == [
        None,
        "DICOM Study ID",
    ]
    assert resource["basedOn"][0]["identifier"]["value"] == "A1"


def test_r4_keeps_the_accession_in_identifier() -> None:
    """R4's identifier still carries the accession number, typed ACSN."""
    resource = one("R4", accession_number="A1")

    [acsn] = [i for i in resource["identifier"] if "type" in i and "coding" in i["type"]]
    assert acsn["value"] == "A1" and acsn["type"]["coding"][0]["code"] == "ACSN"


def test_instance_title_is_left_out_without_a_fhir_mapped_source() -> None:
    """No ContentLabel, DocumentTitle, concept name or ImageType: no title (never the SOP class)."""
    instance = one("R4")["series"][0]["instance"][0]

    assert "title" not in instance


def test_instance_title_falls_back_to_image_type() -> None:
    """ImageType (0008,0008), which FHIR maps to the title, is used when nothing better is sent."""
    instance = one("R4", image_type="ORIGINAL\\PRIMARY\\AXIAL")["series"][0]["instance"][0]

    assert instance["title"] == "ORIGINAL\\PRIMARY\\AXIAL"


def test_instance_title_prefers_the_content_label_over_image_type() -> None:
    """ContentLabel names the instance better than its ImageType."""
    instance = one("R4", image_type="DERIVED", content_label="SEG1")["series"][0]["instance"][0]

    assert instance["title"] == "SEG1"


@pytest.mark.parametrize("release", RELEASES)
def test_missing_modality_is_data_absent_not_a_made_up_code(release: str) -> None:
    """A series without Modality says the value is unknown (data-absent-reason), never OT."""
    resource = one(release, modality="")

    absent = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}
    assert resource["series"][0]["modality"] == absent
    assert "modality" not in resource


def test_endpoint_address_with_trailing_slash_is_normalised() -> None:
    """The contained Endpoint's address is the base URL without a trailing slash."""
    resource = mapped([BASE], "R4", endpoint_address="https://pacs.example/dicom-web/").resource

    assert resource["contained"][0]["address"] == "https://pacs.example/dicom-web"
