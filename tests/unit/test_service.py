"""The service's receive, completion and publish paths, against a fake publisher and clock."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from listener.config import load_settings
from listener.journal import Journal
from listener.model import StoreOutcome
from listener.publisher import Message, PublishError
from listener.scp import IncomingInstance
from listener.service import ListenerService
from tests.support import DICOMDIR_TESTS, PYDICOM_TEST_FILES, dicom_files, free_port, wait_for


class FakePublisher:
    """Records published messages; fails the first ``failures`` publishes like a lost broker."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.messages: list[Message] = []
        self.attempts = 0
        self.lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return True

    def connect(self) -> None:
        return None

    def publish(self, message: Message) -> None:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                raise PublishError("broker down")
            self.messages.append(message)

    def idle(self, seconds: float) -> None:
        return None

    def reachable(self) -> bool:
        return True

    def close(self) -> None:
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_service(
    tmp_path: Path, publisher: FakePublisher, clock: FakeClock, **env: str
) -> ListenerService:
    settings = load_settings(
        None,
        {
            "LISTENER_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "LISTENER_STORAGE__MIN_FREE_MB": "64",
            "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "10",
            "LISTENER_DICOM__PORT": str(free_port()),
            "LISTENER_DICOM__HOST": "127.0.0.1",
            "LISTENER_METRICS__ENABLED": "false",
            **env,
        },
    ).settings
    return ListenerService(settings, publisher=publisher, clock=clock)


def spooled(tmp_path: Path, source: Path) -> IncomingInstance:
    """Copy ``source`` into the spool, as pynetdicom would have written it."""
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / f"{source.name}.{len(list(spool.iterdir()))}.dcm"
    shutil.copyfile(source, target)
    dataset = pydicom.dcmread(source, stop_before_pixels=True)
    return IncomingInstance(
        path=target,
        sop_class_uid=dataset.SOPClassUID,
        sop_instance_uid=dataset.SOPInstanceUID,
        calling_ae="TEST",
    )


def test_stored_instance_is_moved_into_place_and_journaled(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A good instance is stored under instances/<study>/<series>/<sop>.dcm and counts as stored."""
    service = make_service(tmp_path, FakePublisher(), clock)
    incoming = spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm")
    dataset = pydicom.dcmread(incoming.path)

    outcome = service.receive(incoming)

    stored = (
        tmp_path
        / "data"
        / "instances"
        / dataset.StudyInstanceUID
        / dataset.SeriesInstanceUID
        / f"{dataset.SOPInstanceUID}.dcm"
    )
    assert outcome is StoreOutcome.STORED
    assert stored.read_bytes() == (PYDICOM_TEST_FILES / "CT_small.dcm").read_bytes()
    assert not incoming.path.exists()


def test_identical_resend_is_a_duplicate(tmp_path: Path, clock: FakeClock) -> None:
    """Sending the same instance twice acknowledges both but stores one."""
    service = make_service(tmp_path, FakePublisher(), clock)
    service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))

    outcome = service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))

    assert outcome is StoreOutcome.DUPLICATE


def test_dataset_not_matching_its_request_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    """A dataset whose SOP Instance UID differs from the C-STORE request is refused."""
    service = make_service(tmp_path, FakePublisher(), clock)
    incoming = spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm")
    wrong = IncomingInstance(incoming.path, incoming.sop_class_uid, "1.2.3.4", "TEST")

    assert service.receive(wrong) is StoreOutcome.MISMATCH
    assert not (tmp_path / "data" / "instances").exists()


def test_study_is_finished_after_the_quiet_period(tmp_path: Path, clock: FakeClock) -> None:
    """Nothing is finished before the quiet period; afterwards one outbox message per study."""
    service = make_service(tmp_path, FakePublisher(), clock)
    for path in dicom_files(DICOMDIR_TESTS / "77654033"):
        service.receive(spooled(tmp_path, path))

    clock.now += 9.9
    assert service.finish_due_studies() == 0
    clock.now += 0.1
    assert service.finish_due_studies() == 2


def test_broker_failures_delay_but_never_drop_a_study(tmp_path: Path, clock: FakeClock) -> None:
    """Publishing retries after failures; the study is published once it is confirmed."""
    publisher = FakePublisher(failures=2)
    service = make_service(tmp_path, publisher, clock)
    service.start()
    try:
        service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))
        clock.now += 10
        wait_for(lambda: publisher.messages, timeout=10, what="the publish after two failures")
    finally:
        service.stop(grace_seconds=1)

    [message] = publisher.messages
    assert publisher.attempts == 3
    assert message.message_id.endswith("/v1")
    assert json.loads(message.body)["numberOfInstances"] == 1


def test_late_instance_publishes_a_new_version_with_all_instances(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An instance arriving after publication re-opens the study; version 2 holds everything."""
    service = make_service(tmp_path, FakePublisher(), clock)
    files = dicom_files(DICOMDIR_TESTS / "77654033" / "CT2")
    for path in files[:-1]:
        service.receive(spooled(tmp_path, path))
    clock.now += 10
    service.finish_due_studies()

    service.receive(spooled(tmp_path, files[-1]))
    clock.now += 10
    service.finish_due_studies()

    journal = service.journal
    first, second = journal.next_outbox(), None
    assert first is not None
    journal.remove_outbox(first.id)
    second = journal.next_outbox()
    assert second is not None
    assert (first.version, second.version) == (1, 2)
    assert json.loads(second.body)["numberOfInstances"] == len(files)
    assert json.loads(second.body)["meta"]["versionId"] == "2"


def test_identical_resend_after_publication_creates_no_new_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Re-sending an already published instance does not re-open or re-publish its study."""
    service = make_service(tmp_path, FakePublisher(), clock)
    service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))
    clock.now += 10
    service.finish_due_studies()

    assert service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm")) is (
        StoreOutcome.DUPLICATE
    )
    clock.now += 10
    assert service.finish_due_studies() == 0
    assert service.journal.outbox_depth() == 1


def outbox_messages(service: ListenerService) -> list[dict[str, Any]]:
    """Drain the outbox as a broker would, returning the resources in order."""
    resources = []
    while (message := service.journal.next_outbox()) is not None:
        resources.append(json.loads(message.body))
        service.journal.remove_outbox(message.id)
    return resources


def sop_uids(resource: dict[str, Any]) -> set[str]:
    return {i["uid"] for s in resource["series"] for i in s["instance"]}


def send_and_finish(
    tmp_path: Path, service: ListenerService, clock: FakeClock, files: list[Path]
) -> None:
    """Receive ``files``, then let the quiet period pass and finish the study."""
    for path in files:
        service.receive(spooled(tmp_path, path))
    clock.now += 10
    service.finish_due_studies()


def publish_then_expire(
    tmp_path: Path, service: ListenerService, clock: FakeClock, files: list[Path]
) -> None:
    """Publish a study from ``files``, then run housekeeping two days later."""
    send_and_finish(tmp_path, service, clock, files)
    clock.now += 2 * 86_400
    service.housekeeping()


def test_late_instance_after_record_retention_starts_afresh_with_the_next_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After its records are pruned, a late instance is published alone as the next version."""
    service = make_service(
        tmp_path, FakePublisher(), clock, LISTENER_STORAGE__STUDY_RETENTION_DAYS="1"
    )
    files = dicom_files(DICOMDIR_TESTS / "77654033" / "CT2")
    publish_then_expire(tmp_path, service, clock, files[:-1])

    send_and_finish(tmp_path, service, clock, files[-1:])

    first, second = outbox_messages(service)
    assert first["meta"]["versionId"] == "1" and len(sop_uids(first)) == len(files) - 1
    assert second["meta"]["versionId"] == "2"
    assert sop_uids(second) == {pydicom.dcmread(files[-1]).SOPInstanceUID}
    assert len(list((tmp_path / "data" / "instances" / first["id"]).rglob("*.dcm"))) == 1


def test_file_retention_keeps_records_so_late_instances_still_give_the_whole_study(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Deleting a published study's files keeps its records: version 2 still lists everything."""
    service = make_service(
        tmp_path, FakePublisher(), clock, LISTENER_STORAGE__INSTANCE_RETENTION_DAYS="1"
    )
    files = dicom_files(DICOMDIR_TESTS / "77654033" / "CT2")
    publish_then_expire(tmp_path, service, clock, files[:-1])
    study_dir = tmp_path / "data" / "instances" / pydicom.dcmread(files[0]).StudyInstanceUID
    assert not list(study_dir.rglob("*.dcm"))

    send_and_finish(tmp_path, service, clock, files[-1:])

    _, second = outbox_messages(service)
    assert len(sop_uids(second)) == len(files)


def test_studies_within_retention_are_kept(tmp_path: Path, clock: FakeClock) -> None:
    """Housekeeping leaves recently published studies and their files alone."""
    service = make_service(
        tmp_path,
        FakePublisher(),
        clock,
        LISTENER_STORAGE__INSTANCE_RETENTION_DAYS="1",
        LISTENER_STORAGE__STUDY_RETENTION_DAYS="1",
    )
    service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))
    clock.now += 10
    service.finish_due_studies()

    clock.now += 3_600
    service.housekeeping()

    assert len(list((tmp_path / "data" / "instances").rglob("*.dcm"))) == 1
    study_uid = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm").StudyInstanceUID
    assert len(service.journal.study_records(study_uid)) == 1


def test_disk_reserve_refuses_with_out_of_resources(tmp_path: Path, clock: FakeClock) -> None:
    """When free space is below the reserve, instances are refused and nothing is journaled."""
    service = make_service(
        tmp_path, FakePublisher(), clock, LISTENER_STORAGE__MIN_FREE_MB=str(2**40)
    )

    outcome = service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))

    assert outcome is StoreOutcome.OUT_OF_RESOURCES
    assert service.journal.pending_studies() == []


def test_instances_are_not_kept_when_disabled(tmp_path: Path, clock: FakeClock) -> None:
    """With keep_instances false the record is journaled but no file is kept."""
    service = make_service(
        tmp_path, FakePublisher(), clock, LISTENER_STORAGE__KEEP_INSTANCES="false"
    )

    outcome = service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))

    assert outcome is StoreOutcome.STORED
    assert not list((tmp_path / "data").glob("instances/**/*.dcm"))
    [row] = service.journal.pending_studies()
    [record] = service.journal.study_records(row.study_uid)
    assert record.file == "" and record.size > 0


def test_restart_reports_journaled_instances_whose_file_is_missing(
    tmp_path: Path, clock: FakeClock, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """A record without its file is reported at start and still counted in the study."""
    service = make_service(tmp_path, FakePublisher(), clock)
    service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))
    service.journal.close()
    for path in (tmp_path / "data" / "instances").rglob("*.dcm"):
        path.unlink()
    (tmp_path / "data" / "spool" / "half-written.dcm").write_bytes(b"DICM")

    restarted = make_service(tmp_path, FakePublisher(), clock)
    restarted.start()
    restarted.stop(grace_seconds=1)

    lines = json_logs()
    [warning] = [line for line in lines if line["event"].startswith("instance files missing")]
    assert warning["missing"] == 1
    [recovered] = [line for line in lines if line["event"] == "journal recovered"]
    assert recovered["pending_studies"] == 1 and recovered["spool_leftovers_removed"] == 1
    assert not (tmp_path / "data" / "spool" / "half-written.dcm").exists()


def with_study_uid(tmp_path: Path, source: Path, study_uid: str) -> Path:
    """A copy of ``source`` whose instance claims to belong to ``study_uid``."""
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = study_uid
    target = tmp_path / f"moved-{study_uid}.dcm"
    dataset.save_as(target)
    return target


def test_max_study_age_keeps_counting_across_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    """A study's max age counts from its first instance, also when the listener restarted since."""
    ages = {"LISTENER_AGGREGATOR__MAX_STUDY_AGE_SECONDS": "30"}
    files = dicom_files(DICOMDIR_TESTS / "77654033" / "CT2")
    service = make_service(tmp_path, FakePublisher(), clock, **ages)
    for path in files[:3]:  # at 1000, 1008, 1016: never 10 s quiet
        service.receive(spooled(tmp_path, path))
        clock.now += 8
    service.journal.close()

    publisher = FakePublisher()
    restarted = make_service(tmp_path, publisher, clock, **ages)
    restarted.start()
    try:
        clock.now = 1024
        restarted.receive(spooled(tmp_path, files[3]))
        clock.now = 1030
        wait_for(lambda: publisher.messages, timeout=10, what="the max-age publication")
    finally:
        restarted.stop(grace_seconds=1)

    [message] = publisher.messages
    assert message.headers["completion_reason"] == "max-age"


def test_instance_re_sent_under_another_study_leaves_no_stale_pending_study(
    tmp_path: Path, clock: FakeClock, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """The old study of a moved instance is dropped, logged, and only the new one is published."""
    service = make_service(tmp_path, FakePublisher(), clock)
    original = PYDICOM_TEST_FILES / "CT_small.dcm"
    service.receive(spooled(tmp_path, original))
    old_study = pydicom.dcmread(original).StudyInstanceUID

    moved = with_study_uid(tmp_path, original, "1.2.826.0.1.3680043.2.1125.99.7")
    assert service.receive(spooled(tmp_path, moved)) is StoreOutcome.STORED
    clock.now += 10
    service.finish_due_studies()

    assert service.journal.study(old_study) is None
    assert [r["identifier"][0]["value"] for r in outbox_messages(service)] == [
        "urn:oid:1.2.826.0.1.3680043.2.1125.99.7"
    ]
    [warning] = [line for line in json_logs() if line["event"].startswith("instance moved")]
    assert warning["old_study_uid"] == old_study


def test_restart_settles_a_pending_study_left_without_instances(
    tmp_path: Path, clock: FakeClock, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """A pending study with no records (left by an older release) is not carried as pending."""
    service = make_service(tmp_path, FakePublisher(), clock)
    service.receive(spooled(tmp_path, PYDICOM_TEST_FILES / "CT_small.dcm"))
    service.journal.close()
    legacy = sqlite3.connect(tmp_path / "data" / "journal.sqlite3")
    legacy.execute("DELETE FROM instances")
    legacy.commit()
    legacy.close()

    restarted = make_service(tmp_path, FakePublisher(), clock)
    restarted.start()
    restarted.stop(grace_seconds=1)

    [recovered] = [line for line in json_logs() if line["event"] == "journal recovered"]
    assert recovered["pending_studies"] == 0
    assert Journal(tmp_path / "data" / "journal.sqlite3").pending_studies() == []


def test_spool_file_unreadable_is_a_processing_failure(tmp_path: Path, clock: FakeClock) -> None:
    """An I/O error reading the spooled file back answers 0x0110 (retried), not 0xC000."""
    service = make_service(tmp_path, FakePublisher(), clock)
    unreadable = tmp_path / "data" / "spool" / "unreadable.dcm"
    unreadable.mkdir(parents=True)  # reading it raises IsADirectoryError, an OSError
    incoming = IncomingInstance(
        path=unreadable, sop_class_uid="1.2.3", sop_instance_uid="1.2.3.4", calling_ae="TEST"
    )

    assert service.receive(incoming) is StoreOutcome.FAILED
