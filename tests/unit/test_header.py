"""Reading an instance header into a record, refusing unusable datasets, never loading pixels."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from listener import fhir
from listener import scan as scan_module
from listener.aggregator import Aggregator
from listener.fhir import FhirOptions
from listener.header import (
    HEADER_KEYWORDS,
    HEADER_TAGS,
    HeaderError,
    HeaderProblem,
    read_record,
    record_from_dataset,
)
from listener.model import InstanceRecord
from listener.scan import DEFLATED, Scan, TooLarge, Truncated, scan
from tests.deflated import bomb, deflated_copy, deflated_file
from tests.support import PYDICOM_CHARSET_FILES, PYDICOM_TEST_FILES, dicom_files

_MB = 1024 * 1024


def test_ct_small_header_becomes_a_record() -> None:
    """Identity, series and study attributes are read from the header."""
    record = read_record(PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")

    assert record.study_uid == dataset.StudyInstanceUID
    assert record.series_uid == dataset.SeriesInstanceUID
    assert record.sop_instance_uid == dataset.SOPInstanceUID
    assert record.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert record.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert record.modality == "CT"
    assert record.patient_id == str(dataset.PatientID)
    assert record.study_date == dataset.StudyDate


def ct_dataset() -> pydicom.Dataset:
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm", stop_before_pixels=True)
    return dataset


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_identifying_uid_is_refused(keyword: str) -> None:
    """A dataset without Study, Series or SOP Instance UID cannot be used."""
    dataset = ct_dataset()
    delattr(dataset, keyword)

    with pytest.raises(HeaderError) as raised:
        record_from_dataset(dataset)

    assert raised.value.problem is HeaderProblem.MISSING_UID
    assert keyword in str(raised.value)


@pytest.mark.parametrize("bad", ["1.2.abc", "1.02.3", "1." + "2" * 70, "../../etc"])
def test_malformed_uid_is_refused(bad: str) -> None:
    """A UID that is not digits and dots (or longer than 64) is refused, never used as a path."""
    dataset = ct_dataset()
    dataset.SeriesInstanceUID = bad

    with pytest.raises(HeaderError) as raised:
        record_from_dataset(dataset)

    assert raised.value.problem is HeaderProblem.INVALID_UID


def test_uid_padding_is_removed() -> None:
    """Trailing NUL or space padding some senders leave on UIDs is stripped."""
    dataset = ct_dataset()
    dataset.StudyInstanceUID = "1.2.3\x00"

    assert record_from_dataset(dataset).study_uid == "1.2.3"


def test_non_dicom_file_is_refused(tmp_path: Path) -> None:
    """Bytes that are not DICOM are reported as such, not raised as a crash."""
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00" * 128 + b"NOPE" + b"\xff" * 64)

    with pytest.raises(HeaderError) as raised:
        read_record(path)

    assert raised.value.problem is HeaderProblem.NOT_DICOM


def test_malformed_optional_value_becomes_empty() -> None:
    """A non-numeric InstanceNumber is omitted rather than failing the instance."""
    dataset = ct_dataset()
    dataset[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 2, b"x7", 0, False, True)

    assert record_from_dataset(dataset).instance_number is None


def test_pixel_data_is_never_read_into_memory(tmp_path: Path) -> None:
    """Reading the header of a 64 MB instance allocates far less than the pixel data."""
    dataset = ct_dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPInstanceUID = generate_uid()
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 4096, 4096, 2
    dataset.add_new(0x7FE00010, "OW", b"\x01" * (4096 * 4096 * 2 * 2))
    path = tmp_path / "large.dcm"
    dataset.save_as(path, enforce_file_format=True)
    del dataset

    tracemalloc.start()
    record = read_record(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert record.sop_instance_uid
    assert peak < 4 * 1024 * 1024


def _outcome(path: Path, walked: Scan | None) -> InstanceRecord | str:
    """The record read from ``path``, or the problem it was refused for."""
    try:
        return read_record(path, walked)
    except HeaderError as exc:
        return exc.problem.value


def _pydicom_outcome(path: Path) -> InstanceRecord | str:
    """The record of the dataset pydicom's dcmread reads whole (pixel data aside)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        return record_from_dataset(dataset, str(dataset.file_meta.TransferSyntaxUID))
    except HeaderError as exc:
        return exc.problem.value


def _differences(got: InstanceRecord | str, expected: InstanceRecord | str) -> dict[str, Any]:
    """The record fields (or refusals) that differ, each as (got, expected)."""
    if isinstance(got, str) or isinstance(expected, str):
        return {} if got == expected else {"outcome": (got, expected)}
    return {
        field.name: (getattr(got, field.name), getattr(expected, field.name))
        for field in dataclasses.fields(got)
        if getattr(got, field.name) != getattr(expected, field.name)
    }


def test_single_pass_reading_agrees_with_pydicom_on_every_test_file() -> None:
    """Read from the walk's raw values, each pydicom test file gives pydicom's own record."""
    agreed = 0
    for path in [*dicom_files(PYDICOM_TEST_FILES), *dicom_files(PYDICOM_CHARSET_FILES)]:
        try:
            walked = scan(str(path), HEADER_TAGS)
        except (Truncated, OSError):
            continue
        if walked.usable:
            assert _differences(_outcome(path, walked), _outcome(path, None)) == {}, path.name
            agreed += 1

    assert agreed > 150  # most files take the single pass; the comparison is not vacuous


def test_deflated_file_is_read_in_a_single_pass_giving_pydicoms_record() -> None:
    """Deflated image_dfl.dcm is walked over its inflation and gives the dcmread record."""
    path = PYDICOM_TEST_FILES / "image_dfl.dcm"
    walked = scan(str(path), HEADER_TAGS)

    assert walked.usable
    assert walked.transfer_syntax == DEFLATED
    record = _outcome(path, walked)
    assert _differences(record, _pydicom_outcome(path)) == {}
    assert _differences(_outcome(path, None), record) == {}
    assert isinstance(record, InstanceRecord)
    assert record.referring_physician == "^^^^"  # present, though every name component is empty


def test_deflated_copies_of_the_test_files_give_the_records_of_the_originals(
    tmp_path: Path,
) -> None:
    """Each explicit VR file, deflated: single pass, streamed pydicom and dcmread all agree."""
    compared = 0
    for index, source in enumerate(
        [*dicom_files(PYDICOM_TEST_FILES), *dicom_files(PYDICOM_CHARSET_FILES)]
    ):
        copy = deflated_copy(source, tmp_path / f"{index}.dcm")
        if copy is None:
            continue
        try:
            usable = scan(str(source), HEADER_TAGS).usable
        except Truncated:
            with pytest.raises(Truncated):
                scan(str(copy), HEADER_TAGS)
            continue
        original = _outcome(source, None)
        if isinstance(original, InstanceRecord):
            original = dataclasses.replace(original, transfer_syntax_uid=DEFLATED)
        walked = scan(str(copy), HEADER_TAGS)
        assert walked.usable == usable, source.name
        for got in (_outcome(copy, walked), _outcome(copy, None)):
            assert _differences(got, original) == {}, source.name
            assert _differences(got, _pydicom_outcome(copy)) == {}, source.name
        compared += 1

    assert compared > 100


def test_deflated_instance_keeps_its_referrer(tmp_path: Path) -> None:
    """A deflated instance's Referring Physician reaches the record and the ImagingStudy."""
    path = deflated_copy(PYDICOM_TEST_FILES / "SC_rgb_small_odd.dcm", tmp_path / "dfl.dcm")
    assert path is not None

    record = read_record(path, scan(str(path), HEADER_TAGS))
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record, now=0)
    options = FhirOptions(version="R4", subject="identifier", timezone="UTC")
    mapped = fhir.imaging_study(aggregator.snapshot(record.study_uid), version=1, options=options)

    assert record.transfer_syntax_uid == DEFLATED
    assert record.referring_physician == "Moriarty^James"
    assert mapped.resource["referrer"]["display"] == "James Moriarty"


def _mislabelled(source: Path, tmp_path: Path) -> Path:
    """``source`` written implicit VR behind a File Meta saying explicit VR little endian."""
    dataset = pydicom.dcmread(source)
    meta, body = DicomBytesIO(), DicomBytesIO()
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, dataset.file_meta)
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, dataset)
    path = tmp_path / "implicit-inside.dcm"
    path.write_bytes(meta.getvalue() + body.getvalue())
    return path


def test_files_the_walk_cannot_vouch_for_are_parsed_by_pydicom(tmp_path: Path) -> None:
    """A dataset contradicting its explicit VR syntax is read fully by pydicom, deflated or not."""
    mislabelled = _mislabelled(PYDICOM_TEST_FILES / "CT_small.dcm", tmp_path)
    deflated = deflated_copy(mislabelled, tmp_path / "implicit-inside-deflated.dcm")
    assert deflated is not None

    for path in (mislabelled, deflated):
        walked = scan(str(path), HEADER_TAGS)
        assert not walked.usable, path.name
        record = read_record(path, walked)
        assert _differences(record, _pydicom_outcome(path)) == {}, path.name
        assert record.modality == "CT"


def test_deflated_header_sequence_too_large_to_copy_is_parsed_by_pydicom(tmp_path: Path) -> None:
    """A 2 MB undefined-length Request Attributes Sequence is not copied; pydicom reads it."""
    dataset = ct_dataset()
    item = Dataset()
    item.RequestedProcedureID = "RP7"
    item.add_new(0x00090010, "LO", "BULK")
    item.add_new(0x00091000, "OB", bytes(2 * _MB))
    dataset.RequestAttributesSequence = [item]
    dataset["RequestAttributesSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    plain = tmp_path / "plain.dcm"
    dataset.save_as(plain, enforce_file_format=True)
    path = deflated_copy(plain, tmp_path / "deflated.dcm")
    assert path is not None

    walked = scan(str(path), HEADER_TAGS)
    record = read_record(path, walked)

    assert not walked.usable
    assert record.requested_procedure_ids == ("RP7",)
    assert _differences(record, _pydicom_outcome(path)) == {}


def test_deflate_bomb_is_refused_by_its_inflated_size_in_bounded_memory(tmp_path: Path) -> None:
    """A 100 MB inflation of a small file stops at the limit, without holding what it inflated."""
    path = tmp_path / "bomb.dcm"
    bomb(path, inflated_mb=100)
    assert path.stat().st_size < 2 * _MB

    tracemalloc.start()
    with pytest.raises(TooLarge):
        scan(str(path), HEADER_TAGS, max_inflated=20 * _MB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 4 * _MB


def test_deflated_instance_under_the_limit_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Walking and (streamed) pydicom reading of a 64 MB inflation hold a few MB at most."""
    path = tmp_path / "large.dcm"
    header = bomb(path, inflated_mb=64)

    tracemalloc.start()
    walked = scan(str(path), HEADER_TAGS, max_inflated=65 * _MB)
    records = [read_record(path, walked), read_record(path)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert walked.usable
    assert [r.sop_instance_uid for r in records] == [header.SOPInstanceUID] * 2
    assert peak < 4 * _MB


@pytest.mark.parametrize("damage", ["cut", "corrupt"])
def test_broken_deflate_stream_is_truncated(tmp_path: Path, damage: str) -> None:
    """A deflate stream cut short or corrupted is reported as truncated, not read as a header."""
    source = deflated_copy(PYDICOM_TEST_FILES / "CT_small.dcm", tmp_path / "whole.dcm")
    assert source is not None
    data = source.read_bytes()
    broken = tmp_path / "broken.dcm"
    middle = len(data) // 2
    if damage == "cut":
        broken.write_bytes(data[:middle])
    else:
        broken.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]))

    with pytest.raises(Truncated):
        scan(str(broken), HEADER_TAGS)


def test_padding_after_the_deflate_stream_is_ignored(tmp_path: Path) -> None:
    """A byte padding the deflated dataset to even length (as writers add) is not an element."""
    source = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm", stop_before_pixels=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, source)
    path = deflated_file(tmp_path / "padded.dcm", source.file_meta, [body.getvalue()])
    path.write_bytes(path.read_bytes() + b"\x00")

    walked = scan(str(path), HEADER_TAGS)

    assert walked.usable
    assert read_record(path, walked).sop_instance_uid == source.SOPInstanceUID


def test_header_keywords_name_every_top_level_attribute_read() -> None:
    """The walk copies every top-level attribute the record is built from (HEADER_KEYWORDS)."""
    read: set[str] = set()

    class Watched(Dataset):
        def __contains__(self, key: Any) -> bool:
            read.add(keyword_for_tag(key))
            return super().__contains__(key)

    dataset = Watched(pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm"))
    dataset.RequestAttributesSequence = [Dataset()]

    record_from_dataset(dataset)

    assert read and read <= set(HEADER_KEYWORDS)


def _walk_outcome(path: Path) -> Scan | str:
    try:
        return scan(str(path), HEADER_TAGS)
    except Truncated as exc:
        return f"Truncated: {exc}"


def test_the_fast_walk_over_plain_elements_agrees_with_the_element_by_element_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test file, whole and cut short at many points, scans the same with and without it."""
    cases: list[Path] = []
    for index, source in enumerate(dicom_files(PYDICOM_TEST_FILES)):
        data = source.read_bytes()
        whole = tmp_path / f"{index}.dcm"
        whole.write_bytes(data)
        cases.append(whole)
        for cut in range(140, min(len(data), 4000), 181):
            (short := tmp_path / f"{index}-{cut}.dcm").write_bytes(data[:cut])
            cases.append(short)

    fast = [_walk_outcome(path) for path in cases]
    monkeypatch.setattr(scan_module._Mapped, "skip_plain", lambda self, **_: None)
    plain = [_walk_outcome(path) for path in cases]

    assert fast == plain
    assert sum(isinstance(outcome, str) for outcome in fast) > 500  # cuts were caught


def test_a_plain_header_is_read_without_pydicoms_element_conversion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text, date, UID and integer values of a scanned header are decoded directly (speed)."""
    converted: list[int] = []
    convert = pydicom.dataelem.convert_raw_data_element  # what pydicom.dataset calls

    def counting(raw: Any, *args: Any, **kwargs: Any) -> Any:
        converted.append(int(raw.tag))
        return convert(raw, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset, "convert_raw_data_element", counting)
    path = PYDICOM_TEST_FILES / "CT_small.dcm"
    walked = scan(str(path), HEADER_TAGS)

    record = read_record(path, walked)

    assert walked.usable and record.patient_name and record.instance_number is not None
    assert converted == []


@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("PatientName", "PN", b"Yamada^Tarou=="),  # empty trailing groups: pydicom drops them
        ("PatientName", "PN", b"A^B\\C^D \x00"),
        ("InstanceNumber", "IS", b"12.0"),  # not a plain integer: pydicom's reading
        ("InstanceNumber", "IS", b" +7 \\ 8"),
        ("StudyDescription", "LO", b"\xff\xfe bad bytes"),  # undecodable: pydicom replaces
        ("StudyDescription", "LO", b"one\\two \x00"),
        ("StudyComments", "LT", b"not\\split  "),
        ("Modality", "CS", b"CT\\MR "),
        ("AccessionNumber", "SH", b"\x1b$BF|K\\\x1b(B"),  # an ISO 2022 escape: pydicom's
    ],
)
def test_directly_decoded_values_are_pydicoms(
    tmp_path: Path, keyword: str, vr: str, value: bytes
) -> None:
    """Each value read from the scan equals what pydicom's own reading gives, edge cases too."""
    dataset = ct_dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SpecificCharacterSet = "ISO_IR 192"
    tag = Tag(pydicom.datadict.tag_for_keyword(keyword) or 0)
    dataset[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    path = tmp_path / "edge.dcm"
    dataset.save_as(path, enforce_file_format=True)
    walked = scan(str(path), HEADER_TAGS)

    assert walked.usable
    assert _differences(_outcome(path, walked), _pydicom_outcome(path)) == {}
