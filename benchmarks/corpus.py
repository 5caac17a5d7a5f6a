"""Synthetic corpora: many fresh-UID copies of a small and a large CT instance, made cheaply.

Each kind of instance is serialized once with pydicom (``enforce_file_format=True``, Explicit VR
Little Endian) using placeholder UIDs of a fixed length; every copy is that byte string with the
placeholders replaced by new UIDs of the same length, so no dataset is encoded twice.
"""

from __future__ import annotations

import copy
import io
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, UID, ExplicitVRLittleEndian, generate_uid

SMALL_SOURCE = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LARGE_SIDE = 512
SERIES_PER_STUDY = 4
PARTS = 4
_UID_DIGITS = 36  # pydicom's 26-character root + 36 digits = 62 characters (even: no padding)


def new_uid() -> str:
    """A fresh UID under pydicom's root, always 62 characters long."""
    low = 10 ** (_UID_DIGITS - 1)
    return f"{PYDICOM_ROOT_UID}{low + secrets.randbelow(9 * low)}"


@dataclass(frozen=True)
class Template:
    """One encoded instance whose study, series and SOP instance UIDs are placeholders."""

    data: bytes
    study: bytes
    series: bytes
    instance: bytes

    def fill(self, study: str, series: str, instance: str) -> bytes:
        """The encoded instance with new UIDs in place of the placeholders."""
        return (
            self.data.replace(self.study, study.encode())
            .replace(self.series, series.encode())
            .replace(self.instance, instance.encode())
        )


def make_template(dataset: Dataset) -> Template:
    """Encode ``dataset`` (Explicit VR Little Endian) with placeholder UIDs."""
    study, series, instance = new_uid(), new_uid(), new_uid()
    dataset = copy.deepcopy(dataset)
    dataset.StudyInstanceUID = study
    dataset.SeriesInstanceUID = series
    dataset.SOPInstanceUID = instance
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(instance)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return Template(buffer.getvalue(), study.encode(), series.encode(), instance.encode())


def small_template() -> Template:
    """The small instance: pydicom's CT_small.dcm (128x128, about 39 KB)."""
    return make_template(pydicom.dcmread(SMALL_SOURCE))


def large_dataset() -> Dataset:
    """A 512x512 16-bit CT image (about 512 KB of noise pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = CT_IMAGE_STORAGE
    dataset.update(_large_attributes())
    dataset.PixelData = random.Random(0).randbytes(LARGE_SIDE * LARGE_SIDE * 2)
    return dataset


def _large_attributes() -> Dataset:
    """Patient, study and image attributes of the large instance."""
    dataset = Dataset()
    dataset.PatientName = "Bench^Large"
    dataset.PatientID = "BENCH-LARGE"
    dataset.StudyDate, dataset.StudyTime = "20240101", "120000"
    dataset.AccessionNumber, dataset.StudyID = "BENCH1", "1"
    dataset.Modality, dataset.SeriesNumber, dataset.InstanceNumber = "CT", 1, 1
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    dataset.Rows = dataset.Columns = LARGE_SIDE
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 0
    return dataset


def large_template() -> Template:
    """The large CT instance as a template."""
    return make_template(large_dataset())


@dataclass
class Study:
    """One generated study on disk, its instances split into part directories (one per sender)."""

    uid: str
    root: Path
    count: int = 0
    size_bytes: int = 0
    parts: list[Path] = field(default_factory=list)


def write_study(template: Template, root: Path, count: int, *, parts: int = PARTS) -> Study:
    """Write ``count`` instances of one new study (a few series) under ``root``, in ``parts``."""
    study = Study(new_uid(), root, count)
    study.parts = [root / f"part{index}" for index in range(parts)]
    for part in study.parts:
        part.mkdir(parents=True)
    series = [new_uid() for _ in range(SERIES_PER_STUDY)]
    for index in range(count):
        data = template.fill(study.uid, series[index % SERIES_PER_STUDY], new_uid())
        (study.parts[index * parts // count] / f"{index:06d}.dcm").write_bytes(data)
        study.size_bytes += len(data)
    return study
