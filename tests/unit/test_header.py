"""Reading an instance header into a record, refusing unusable datasets, never loading pixels."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from listener.completeness import Scan, Truncated, scan
from listener.header import (
    HEADER_KEYWORDS,
    HEADER_TAGS,
    HeaderError,
    HeaderProblem,
    read_record,
    record_from_dataset,
)
from listener.model import InstanceRecord
from tests.support import PYDICOM_CHARSET_FILES, PYDICOM_TEST_FILES, dicom_files


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


def test_single_pass_reading_agrees_with_pydicom_on_every_test_file() -> None:
    """Read from the walk's raw values, each pydicom test file gives pydicom's own record."""
    agreed = 0
    for path in [*dicom_files(PYDICOM_TEST_FILES), *dicom_files(PYDICOM_CHARSET_FILES)]:
        try:
            walked = scan(str(path), HEADER_TAGS)
        except (Truncated, OSError):
            continue
        if walked.usable:
            assert _outcome(path, walked) == _outcome(path, None), path.name
            agreed += 1

    assert agreed > 150  # most files take the single pass; the comparison is not vacuous


def test_files_the_walk_cannot_vouch_for_are_parsed_by_pydicom(tmp_path: Path) -> None:
    """A deflated file, or one whose dataset contradicts its explicit VR syntax, is read fully."""
    source = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")  # explicit VR little endian
    meta, body = DicomBytesIO(), DicomBytesIO()
    meta.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(meta, source.file_meta)
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, source)
    mislabelled = tmp_path / "implicit-inside.dcm"
    mislabelled.write_bytes(meta.getvalue() + body.getvalue())

    for path in (PYDICOM_TEST_FILES / "image_dfl.dcm", mislabelled):
        walked = scan(str(path), HEADER_TAGS)
        assert not walked.usable, path.name
        assert read_record(path, walked) == read_record(path)
    assert read_record(mislabelled, scan(str(mislabelled), HEADER_TAGS)).modality == "CT"


def test_header_keywords_name_every_top_level_attribute_read() -> None:
    """The walk copies every top-level attribute the record is built from (HEADER_KEYWORDS)."""
    read: set[str] = set()

    class Watched(Dataset):
        def get(self, key: Any, default: Any = None) -> Any:
            if isinstance(key, str):
                read.add(key)
            return super().get(key, default)

    dataset = Watched(pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm"))
    dataset.RequestAttributesSequence = [Dataset()]

    record_from_dataset(dataset)

    assert read and read <= set(HEADER_KEYWORDS)
