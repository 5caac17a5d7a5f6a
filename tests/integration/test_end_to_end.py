"""C-STORE in with DCMTK's storescu, one FHIR R4 ImagingStudy per study out on RabbitMQ."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
from fhir.resources.imagingstudy import ImagingStudy as R5ImagingStudy
from fhir.resources.R4B.imagingstudy import ImagingStudy
from pynetdicom import AE

# pynetdicom creates its SOP class names at import time, so mypy cannot see them.
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.conftest import ListenerFactory
from tests.support import (
    DICOMDIR_TESTS,
    PYDICOM_CHARSET_FILES,
    PYDICOM_TEST_FILES,
    AmqpTopology,
    dcmtk_tool,
    dicom_files,
    open_ct_association,
    published_index,
    published_instances,
    storescu,
    storescu_as_sent,
    wait_for,
)

StudyIndex = dict[str, dict[str, set[str]]]


def index_studies(files: list[Path]) -> StudyIndex:
    """Study UID -> Series UID -> SOP Instance UIDs, read independently with pydicom."""
    studies: StudyIndex = collections.defaultdict(lambda: collections.defaultdict(set))
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        studies[dataset.StudyInstanceUID][dataset.SeriesInstanceUID].add(dataset.SOPInstanceUID)
    return studies


def test_dicomdir_studies_publish_one_imagingstudy_each(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Every study of pydicom's dicomdirtests arrives as exactly one valid R4 ImagingStudy."""
    files = dicom_files(DICOMDIR_TESTS)
    expected = index_studies(files)
    listener = start_listener(quiet_period=1.0)

    run = storescu(listener.port, files)

    assert len(run.succeeded) == len(files), run.output
    messages = amqp.drain(len(expected), timeout=30)
    time.sleep(1.5)  # one more quiet period: nothing else may follow
    assert amqp.depth() == 0
    by_study = {m.resource["id"]: m for m in messages}
    assert set(by_study) == set(expected)
    for study_uid, series in expected.items():
        message = by_study[study_uid]
        resource = message.resource
        ImagingStudy.model_validate(resource)
        assert published_index(resource) == series
        assert resource["numberOfSeries"] == len(series)
        assert resource["numberOfInstances"] == sum(map(len, series.values()))
        assert resource["identifier"][0] == {
            "system": "urn:dicom:uid",
            "value": f"urn:oid:{study_uid}",
        }
        props = message.properties
        assert props.content_type == "application/fhir+json"
        assert props.delivery_mode == 2
        assert props.message_id == f"{study_uid}/v1"
        assert props.headers["study_instance_uid"] == study_uid
        assert props.headers["resource_version"] == 1
        assert props.headers["fhir_version"] == "4.0.1"
    assert listener.stop() == 0


def test_logs_one_line_per_association_and_study_without_patient_data(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Association and study lines are logged; no patient name, ID or birth date appears."""
    files = dicom_files(DICOMDIR_TESTS / "77654033")
    listener = start_listener(quiet_period=0.5)

    storescu(listener.port, files, ae_title="CT_ROOM_1")
    amqp.drain(len(index_studies(files)), timeout=30)
    assert listener.stop() == 0

    [association] = listener.events("association ended")
    assert association["calling_ae"] == "CT_ROOM_1"
    assert association["instances"] == len(files)
    published = list(listener.events("study published"))
    assert {line["study_uid"] for line in published} == set(index_studies(files))
    text = listener.log_path.read_text()
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(dataset.get(keyword, "")).strip()
            if value:
                assert value not in text, f"{keyword} leaked into the log"


def test_r5_resources_are_published_when_configured(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """With fhir.version = R5 each study arrives as a valid R5 ImagingStudy, headers saying so."""
    files = dicom_files(DICOMDIR_TESTS / "77654033")
    listener = start_listener(quiet_period=0.5, LISTENER_FHIR__VERSION="R5")

    storescu(listener.port, files)

    expected = index_studies(files)
    messages = amqp.drain(len(expected), timeout=30)
    for message in messages:
        R5ImagingStudy.model_validate(message.resource)
        assert message.properties.headers["fhir_version"] == "5.0.0"
        assert published_index(message.resource) == expected[message.resource["id"]]
        assert "coding" in message.resource["modality"][0]


def test_compressed_instances_are_accepted_and_kept_as_sent(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """Compressed transfer syntaxes, proposed alone (storescu -R), are stored as sent."""
    names = [
        "JPEG2000.dcm",  # JPEG 2000
        "GDCMJ2K_TextGBR.dcm",  # JPEG 2000 lossless
        "JPEG-lossy.dcm",  # JPEG extended
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "image_dfl.dcm",  # deflated
    ]
    # pydicom's RLE files share SOP Instance UIDs with the others: send a copy with a fresh UID.
    rle = pydicom.dcmread(PYDICOM_TEST_FILES / "MR_small_RLE.dcm")
    rle.SOPInstanceUID = rle.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    rle.save_as(tmp_path / "rle.dcm")
    files = [PYDICOM_TEST_FILES / name for name in names] + [tmp_path / "rle.dcm"]
    assert len({pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}) == len(
        files
    ), "each file must be a distinct instance"
    listener = start_listener(quiet_period=0.5)

    run = storescu_as_sent(listener.port, files)

    assert len(run.succeeded) == len(files), run.output
    published = published_instances(amqp.drain_until_quiet(quiet=2.0, timeout=60))
    for path in files:
        sent = pydicom.dcmread(path)
        stored_path = next(listener.data_dir.glob(f"instances/*/*/{sent.SOPInstanceUID}.dcm"))
        stored = pydicom.dcmread(stored_path)
        assert sent.SOPInstanceUID in published
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.PixelData == sent.PixelData
    assert listener.stop() == 0


def test_listener_survives_every_pydicom_test_file(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """All of pydicom's test data leaves the listener up; each stored instance is published."""
    files = dicom_files(PYDICOM_TEST_FILES) + dicom_files(PYDICOM_CHARSET_FILES)
    listener = start_listener(quiet_period=1.0)

    run = storescu_as_sent(listener.port, files)

    assert listener.alive
    assert run.succeeded, run.output
    stored = {
        pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID
        for path in run.succeeded
    }
    messages = amqp.drain_until_quiet(quiet=3.0, timeout=120)
    latest: dict[str, dict[str, Any]] = {}
    for message in messages:
        ImagingStudy.model_validate(message.resource)
        resource = message.resource
        previous = latest.get(resource["id"])
        if previous is None or int(previous["meta"]["versionId"]) < int(
            resource["meta"]["versionId"]
        ):
            latest[resource["id"]] = resource
    published = [
        uid for r in latest.values() for uids in published_index(r).values() for uid in uids
    ]
    assert sorted(published) == sorted(stored), "each stored instance in exactly one study"
    echo = subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", "DICOM-LISTENER", "127.0.0.1", str(listener.port)],
        capture_output=True,
        timeout=30,
    )
    assert echo.returncode == 0
    assert listener.stop() == 0


def test_c_echo_is_answered(start_listener: ListenerFactory) -> None:
    """DCMTK's echoscu gets a successful C-ECHO response."""
    listener = start_listener()

    echo = subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", "DICOM-LISTENER", "127.0.0.1", str(listener.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_dataset_without_study_uid_gets_a_failure_status(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A dataset lacking its Study Instance UID is answered 0xA900 and never published."""
    listener = start_listener()
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    del dataset.StudyInstanceUID
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", listener.port, ae_title="DICOM-LISTENER")
    assert association.is_established

    status = association.send_c_store(dataset)
    association.release()

    assert status.Status == 0xA900
    assert listener.alive
    time.sleep(1.0)
    assert amqp.depth() == 0


def test_sigterm_lets_an_open_association_finish_then_exits_zero(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """On SIGTERM new associations are refused, an open one completes its stores, exit code is 0."""
    listener = start_listener(quiet_period=60)
    association, dataset = open_ct_association(listener.port)

    assert listener.process is not None
    listener.process.send_signal(signal.SIGTERM)
    wait_for(
        lambda: any(listener.events("shutting down")), timeout=10, what="the shutdown to begin"
    )
    late = AE(ae_title="LATE")
    late.add_requested_context(Verification)
    refused = late.associate("127.0.0.1", listener.port, ae_title="DICOM-LISTENER")
    status = association.send_c_store(dataset)
    association.release()

    assert not refused.is_established
    assert status.Status == 0x0000
    assert listener.process.wait(timeout=30) == 0


def test_study_pending_at_shutdown_is_published_after_restart(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A study still inside its quiet period at SIGTERM is published by the next start."""
    first = start_listener(quiet_period=60)
    run = storescu(first.port, [PYDICOM_TEST_FILES / "CT_small.dcm"])
    assert len(run.succeeded) == 1, run.output
    assert first.stop() == 0
    assert amqp.depth() == 0

    start_listener(quiet_period=0.5, data_dir=first.data_dir)

    [message] = amqp.drain(1, timeout=20)
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm", stop_before_pixels=True)
    assert message.resource["id"] == dataset.StudyInstanceUID
    assert published_index(message.resource) == {
        dataset.SeriesInstanceUID: {dataset.SOPInstanceUID}
    }
