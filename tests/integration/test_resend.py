"""Re-sent SOP instances over real associations to a listener process, for each policy.

Each test publishes a four-instance study, re-sends one instance unchanged, then re-sends
instances with other pixel data, another SeriesDescription, another series and another study,
and checks the C-STORE statuses, the ImagingStudy versions on the queue and the files on disk.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from listener.instance_files import content_digest
from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, make_study
from tests.support import AmqpTopology, Received, published_index

QUIET = 1.5  # no message for this long (three quiet periods): nothing more is coming


def send(port: int, datasets: list[Dataset]) -> list[Dataset]:
    """C-STORE ``datasets`` in one association; the response status of each."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    assert association.is_established
    try:
        return [association.send_c_store(dataset) for dataset in datasets]
    finally:
        association.release()


def with_pixels_changed(dataset: Dataset) -> Dataset:
    """The same header, one pixel byte inverted."""
    changed = copy.deepcopy(dataset)
    data = bytearray(changed.PixelData)
    data[100] ^= 0xFF
    changed.PixelData = bytes(data)
    return changed


def with_values(dataset: Dataset, **values: str) -> Dataset:
    changed = copy.deepcopy(dataset)
    for keyword, value in values.items():
        setattr(changed, keyword, value)
    return changed


def published_study() -> tuple[list[Dataset], list[Dataset]]:
    """The original four instances (SeriesDescription "Original") and their changed re-sends."""
    original = make_study(4, series=1)
    for dataset in original:
        dataset.SeriesDescription = "Original"
    changed = [
        with_pixels_changed(original[0]),
        with_values(original[1], SeriesDescription="Corrected"),
        with_values(original[2], SeriesInstanceUID=generate_uid()),
        with_values(original[3], StudyInstanceUID=generate_uid()),
    ]
    return original, changed


def publish_and_resend_identical(
    port: int, amqp: AmqpTopology, original: list[Dataset]
) -> Received:
    """Publish the study (version 1); an identical re-send gets 0x0000 and publishes nothing."""
    assert [status.Status for status in send(port, original)] == [0x0000] * 4
    [first] = amqp.drain(1, timeout=20)
    assert first.resource["meta"]["versionId"] == "1"

    [status] = send(port, [original[0]])

    assert status.Status == 0x0000
    assert amqp.drain_until_quiet(quiet=QUIET, timeout=10) == []
    return first


def files_on_disk(data_dir: Path) -> dict[str, list[Path]]:
    """SOP Instance UID -> its files under data_dir/instances."""
    found: dict[str, list[Path]] = {}
    for path in (data_dir / "instances").rglob("*.dcm"):
        found.setdefault(path.stem, []).append(path)
    return found


def assert_one_file_each(data_dir: Path, expected: list[Dataset], tmp_path: Path) -> None:
    """Exactly one file per SOP instance, at its study/series place, with the expected content."""
    files = files_on_disk(data_dir)
    assert sorted(files) == sorted(str(d.SOPInstanceUID) for d in expected)
    for dataset in expected:
        [path] = files[str(dataset.SOPInstanceUID)]
        assert (path.parent.parent.name, path.parent.name) == (
            dataset.StudyInstanceUID,
            dataset.SeriesInstanceUID,
        )
        reference = tmp_path / "reference.dcm"
        copy.deepcopy(dataset).save_as(reference, enforce_file_format=True)
        assert content_digest(path) == content_digest(reference)


def test_new_version_publishes_every_changed_re_send_and_keeps_one_file_per_instance(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """new-version: 0x0000, a new ImagingStudy version per change, moved files not left behind."""
    listener = start_listener(LISTENER_STORAGE__ON_CHANGED_INSTANCE="new-version")
    original, changed = published_study()
    first = publish_and_resend_identical(listener.port, amqp, original)

    assert send(listener.port, [changed[0]])[0].Status == 0x0000  # pixels only
    [second] = amqp.drain(1, timeout=20)
    assert second.resource["meta"]["versionId"] == "2"
    assert {**second.resource, "meta": {}} == {**first.resource, "meta": {}}

    assert send(listener.port, [changed[1]])[0].Status == 0x0000  # SeriesDescription
    [third] = amqp.drain(1, timeout=20)
    assert third.resource["meta"]["versionId"] == "3"
    assert [s["description"] for s in third.resource["series"]] == ["Corrected"]

    statuses = send(listener.port, changed[2:])  # another series; another study
    assert [status.Status for status in statuses] == [0x0000, 0x0000]
    messages = amqp.drain(2, timeout=20)
    by_study = {m.resource["id"]: published_index(m.resource) for m in messages}
    assert by_study[str(changed[3].StudyInstanceUID)] == {
        str(changed[3].SeriesInstanceUID): {str(changed[3].SOPInstanceUID)}
    }
    assert by_study[str(original[0].StudyInstanceUID)][str(changed[2].SeriesInstanceUID)] == {
        str(changed[2].SOPInstanceUID)
    }
    assert_one_file_each(listener.data_dir, changed, tmp_path)


def test_keep_first_acknowledges_changed_re_sends_and_changes_nothing(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """keep-first: 0x0000 for every changed re-send, no new version, the first files kept."""
    listener = start_listener(LISTENER_STORAGE__ON_CHANGED_INSTANCE="keep-first")
    original, changed = published_study()
    publish_and_resend_identical(listener.port, amqp, original)

    statuses = send(listener.port, changed)

    assert [status.Status for status in statuses] == [0x0000] * 4
    assert amqp.drain_until_quiet(quiet=QUIET, timeout=10) == []
    assert_one_file_each(listener.data_dir, original, tmp_path)
    assert len(list(listener.events("changed instance ignored; stored version kept"))) == 4


def test_reject_refuses_changed_re_sends_with_0110_and_an_error_comment(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """reject: 0x0110 with an Error Comment for every changed re-send; nothing else changes."""
    listener = start_listener(LISTENER_STORAGE__ON_CHANGED_INSTANCE="reject")
    original, changed = published_study()
    publish_and_resend_identical(listener.port, amqp, original)

    statuses = send(listener.port, changed)

    assert [status.Status for status in statuses] == [0x0110] * 4
    assert {str(status.ErrorComment) for status in statuses} == {
        "SOP Instance UID already stored with other content"
    }
    assert amqp.drain_until_quiet(quiet=QUIET, timeout=10) == []
    assert_one_file_each(listener.data_dir, original, tmp_path)
