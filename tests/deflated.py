"""Deflated test files: pydicom's own files with their dataset deflated, and deflate bombs."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from tests.support import PYDICOM_TEST_FILES

_MB = 1024 * 1024
BOMB_TAG = 0x7FD11000  # a private OB element, its creator at (7FD1,0010)


def deflated_file(path: Path, meta: FileMetaDataset, dataset: Iterable[bytes]) -> Path:
    """Write a Deflated Explicit VR Little Endian file whose dataset is the joined ``dataset``."""
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(header, meta)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as file:
        file.write(header.getvalue())
        for chunk in dataset:
            file.write(deflater.compress(chunk))
        file.write(deflater.flush())
    return path


def deflated_copy(source: Path, target: Path) -> Path | None:
    """``source`` with its dataset bytes deflated as they are; None unless it is explicit VR LE.

    The bytes are not re-encoded, so whatever quirks the file has, its deflated copy has too.
    """
    try:
        meta = pydicom.filereader.read_file_meta_info(source)
    except InvalidDicomError:
        return None
    if (
        meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian
        or "FileMetaInformationGroupLength" not in meta
    ):
        return None
    data = source.read_bytes()
    # The File Meta group ends 12 bytes after (0002,0000) plus its group length value.
    start = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    return deflated_file(target, meta, [data[start:]])


def bomb(path: Path, *, inflated_mb: int) -> Dataset:
    """A deflated CT header followed by ``inflated_mb`` MB of zeros in a private OB element.

    A few hundred KB on disk; returns the header dataset (its UIDs identify the instance).
    """
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm", stop_before_pixels=True)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.add_new(0x7FD10010, "LO", "BOMB")
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, dataset)
    element = struct.pack("<HH2sHI", BOMB_TAG >> 16, BOMB_TAG & 0xFFFF, b"OB", 0, inflated_mb * _MB)
    zeros = bytes(_MB)
    deflated_file(path, dataset.file_meta, [body.getvalue(), element, *[zeros] * inflated_mb])
    return dataset
