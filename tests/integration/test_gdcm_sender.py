"""GDCM's gdcmscu as a second real sending modality: compressed files arrive exactly as sent."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pydicom.filereader
from pydicom.uid import generate_uid

from tests.conftest import ListenerFactory
from tests.support import PYDICOM_TEST_FILES, AmqpTopology, gdcmscu, latest_versions, wait_for

# pydicom's compressed test files, each a distinct instance as it is on disk.
AS_THEY_ARE = {
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "GDCMJ2K_TextGBR.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "rtdose_rle.dcm": "1.2.840.10008.1.2.5",  # RLE lossless
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",  # deflated
}
# These share their SOP Instance UID with one above (or lack a study): sent as copies with fresh
# UIDs; the pixel data stays encapsulated exactly as in the original.
AS_COPIES = {
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm": "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",  # JPEG extended
}


def fresh_copy(name: str, directory: Path) -> Path:
    """``name`` saved under ``directory`` with new instance (and, if missing, study) UIDs."""
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / name)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = dataset.get("StudyInstanceUID") or generate_uid()
    dataset.SeriesInstanceUID = dataset.get("SeriesInstanceUID") or generate_uid()
    path = directory / name
    dataset.save_as(path)
    return path


def test_gdcmscu_sends_compressed_files_that_are_stored_byte_identical(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """JPEG, JPEG 2000, JPEG-LS, RLE, deflate from gdcmscu: stored as sent, each one published."""
    files = [PYDICOM_TEST_FILES / name for name in AS_THEY_ARE]
    files += [fresh_copy(name, tmp_path) for name in AS_COPIES]
    sent = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in files}
    assert len({str(d.SOPInstanceUID) for d in sent.values()}) == len(files)
    listener = start_listener(quiet_period=0.5)

    run = gdcmscu(listener.port, files)

    assert run.returncode == 0 and run.succeeded == files, run.output[-4000:]
    ended = wait_for(
        lambda: [e for e in listener.events("association ended") if e["calling_ae"] == "GDCMSCU"],
        timeout=10,
        what="the gdcmscu association to end",
    )
    assert [(e["how"], e["instances"]) for e in ended] == [("released", len(files))]
    published = latest_versions(amqp.drain_until_quiet(quiet=2.0, timeout=60))
    listed = {i["uid"] for r in published.values() for s in r["series"] for i in s["instance"]}
    for path, dataset in sent.items():
        uid = str(dataset.SOPInstanceUID)
        [stored_path] = listener.data_dir.glob(f"instances/*/*/{uid}.dcm")
        stored = pydicom.dcmread(stored_path)
        syntax = {**AS_THEY_ARE, **AS_COPIES}[path.name]
        assert stored.file_meta.TransferSyntaxUID == dataset.file_meta.TransferSyntaxUID == syntax
        # Encapsulated frames byte for byte (gdcmscu itself fixes some files' VRs on the way).
        assert stored.PixelData == pydicom.dcmread(path).PixelData, path.name
        assert uid in listed
    assert listener.stop() == 0
