"""Property-based: header parsing and FHIR mapping never raise, whatever the dataset holds."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pydicom.config
from fhir.resources.imagingstudy import ImagingStudy as R5ImagingStudy
from fhir.resources.R4B.imagingstudy import ImagingStudy as R4ImagingStudy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from listener import fhir
from listener.aggregator import Aggregator
from listener.fhir import FhirOptions
from listener.header import HEADER_TAGS, HeaderError, configure_lenient_reading, read_record
from listener.model import InstanceRecord
from listener.scan import scan
from tests.deflated import deflated_copy

MODELS: dict[str, Any] = {"R4": R4ImagingStudy, "R5": R5ImagingStudy}
# Text attributes the mapping reads, with the VR each is written as.
TEXT_ATTRIBUTES = {
    "StudyDate": "DA",
    "StudyTime": "TM",
    "SeriesDate": "DA",
    "SeriesTime": "TM",
    "TimezoneOffsetFromUTC": "SH",
    "AccessionNumber": "SH",
    "StudyID": "SH",
    "StudyDescription": "LO",
    "SeriesDescription": "LO",
    "Modality": "CS",
    "BodyPartExamined": "CS",
    "Laterality": "CS",
    "ImageLaterality": "CS",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientName": "PN",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "ReferringPhysicianName": "PN",
    "NameOfPhysiciansReadingStudy": "PN",
    "PerformingPhysicianName": "PN",
    "OperatorsName": "PN",
    "InstitutionName": "LO",
    "InstitutionalDepartmentName": "LO",
    "AdmissionID": "LO",
    "StudyComments": "LT",
    "RequestedProcedureComments": "LT",
    "ContentLabel": "CS",
    "DocumentTitle": "ST",
    "SeriesNumber": "IS",
    "InstanceNumber": "IS",
    "ImageType": "CS",
    "PerformedLocation": "SH",
}
CODE_SEQUENCES = [
    "ProcedureCodeSequence",
    "ConceptNameCodeSequence",
    "RequestedProcedureCodeSequence",
    "AnatomicRegionSequence",
]

anything = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
valid_uid = st.from_regex(r"[1-9][0-9]{0,2}(\.[1-9][0-9]{0,15}){1,6}", fullmatch=True)


@st.composite
def code_items(draw: st.DrawFn) -> list[Dataset]:
    items = []
    for _ in range(draw(st.integers(0, 3))):
        item = Dataset()
        for keyword in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
            if draw(st.booleans()):
                raw(item, keyword, "LO", draw(anything))
        items.append(item)
    return items


def raw(dataset: Dataset, keyword: str, vr: str, text: str) -> None:
    """Put ``text`` into the dataset as raw bytes, unvalidated, as a broken sender would."""
    tag = Tag(keyword)
    value = text.encode("utf-8", "surrogatepass")
    value += b" " * (len(value) % 2)
    dataset[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = draw(st.sampled_from(["1.2.840.10008.5.1.4.1.1.2", "1.2.3"]))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        roll = draw(st.integers(0, 19))  # mostly valid, sometimes garbage, rarely absent
        if roll:
            raw(dataset, keyword, "UI", draw(valid_uid) if roll > 1 else draw(anything))
    for keyword, vr in TEXT_ATTRIBUTES.items():
        if draw(st.booleans()):
            raw(dataset, keyword, vr, draw(anything))
    for keyword in CODE_SEQUENCES:
        if draw(st.booleans()):
            setattr(dataset, keyword, draw(code_items()))
    dataset.SpecificCharacterSet = draw(st.sampled_from(["ISO_IR 192", "ISO_IR 100", ""]))
    return dataset


def _outcome(path: Path, *, scanned: bool = False) -> InstanceRecord | str:
    """The record read from ``path``, or the problem it was refused for."""
    walked = scan(str(path), HEADER_TAGS) if scanned else None
    assert walked is None or walked.usable  # pydicom wrote it: plain explicit VR little endian
    try:
        return read_record(path, walked)
    except HeaderError as exc:
        return exc.problem.value


def _undeflated(outcome: InstanceRecord | str) -> InstanceRecord | str:
    """The outcome as the explicit VR little endian original would give it."""
    if isinstance(outcome, str):
        return outcome
    assert outcome.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    return dataclasses.replace(outcome, transfer_syntax_uid=ExplicitVRLittleEndian)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.sampled_from(["R4", "R5"]), st.sampled_from(["identifier", "contained"]))
def test_arbitrary_datasets_parse_and_map_to_valid_resources(
    dataset: Dataset, release: str, subject: str
) -> None:
    """Any dataset is refused with HeaderError or maps to a resource the model accepts.

    Read from the single-pass scan or by pydicom, it gives the same record (or the same refusal),
    and so does its deflated copy, read either way (but for the transfer syntax).
    """
    configure_lenient_reading()
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "arbitrary.dcm"
        try:
            dataset.save_as(path, enforce_file_format=True)
        except (ValueError, TypeError, UnicodeError, OverflowError):
            return  # pydicom cannot even write it: no sender could send it either
        deflated = deflated_copy(path, Path(directory) / "deflated.dcm")
        assert deflated is not None
        outcomes = [_outcome(path), _outcome(path, scanned=True)]
        outcomes += [_undeflated(_outcome(deflated, scanned=s)) for s in (False, True)]
    assert outcomes[1:] == outcomes[:1] * 3
    record = outcomes[0]
    if not isinstance(record, InstanceRecord):
        return
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record, now=0)
    options = FhirOptions(version=release, subject=subject, timezone="Europe/Berlin")

    mapped = fhir.imaging_study(aggregator.snapshot(record.study_uid), version=1, options=options)

    MODELS[release].model_validate(mapped.resource)
