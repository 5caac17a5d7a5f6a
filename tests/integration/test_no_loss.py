"""No acknowledged instance is ever lost: kill -9, restarts, broker outages, late instances."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, Modality, make_study
from tests.support import (
    DICOMDIR_TESTS,
    RABBITMQ_URL,
    AmqpTopology,
    ListenerProcess,
    Received,
    TcpProxy,
    dicom_files,
    latest_versions,
    published_index,
    storescu,
    wait_for,
)


def assert_duplicates_identical(messages: list[Received]) -> None:
    """Messages sharing a message_id (at-least-once repeats) carry the same version and body."""
    bodies: dict[str, bytes] = {}
    for message in messages:
        message_id = message.properties.message_id
        assert bodies.setdefault(message_id, message.body) == message.body, message_id


def all_instances(resource: dict[str, Any]) -> set[str]:
    return {uid for uids in published_index(resource).values() for uid in uids}


def test_kill_9_at_any_point_loses_no_acknowledged_instance(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """SIGKILL mid-association, right after acks and while publishing; every ack is published."""
    datasets = make_study(120)
    listener = start_listener(quiet_period=1.0)
    data_dir, port = listener.data_dir, listener.port
    modality = Modality(port, pause_after=70, pause_seconds=4.0)
    sender = modality.start(datasets)

    def restart(current: ListenerProcess) -> ListenerProcess:
        current.kill()
        return start_listener(quiet_period=1.0, data_dir=data_dir, port=port)

    wait_for(lambda: len(modality.acked) >= 15, timeout=60, what="15 acknowledged instances")
    listener = restart(listener)  # mid-association
    wait_for(lambda: len(modality.acked) >= 45, timeout=60, what="45 acknowledged instances")
    listener = restart(listener)  # right after an ack
    current = listener
    wait_for(lambda: any(current.events("study finished")), timeout=60, what="the study to finish")
    listener = restart(listener)  # while the finished study is being published
    wait_for(lambda: len(modality.acked) >= 100, timeout=60, what="100 acknowledged instances")
    listener = restart(listener)
    sender.join(timeout=120)

    assert len(set(modality.acked)) == len(datasets)
    messages = amqp.drain_until_quiet(quiet=3.0, timeout=90)
    assert_duplicates_identical(messages)
    [final] = latest_versions(messages).values()
    assert all_instances(final) == set(modality.acked)
    assert final["numberOfInstances"] == len(datasets)


def test_broker_outage_delays_studies_but_loses_none(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """With the broker cut off, studies still finish; all arrive, in order, once it is back."""
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        url = RABBITMQ_URL.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        listener = start_listener(
            quiet_period=0.3, LISTENER_AMQP__URL=url, LISTENER_AMQP__RECONNECT_MAX_SECONDS="1"
        )
        first = make_study(2, series=1)
        Modality(listener.port).send_all(first)
        assert amqp.drain(1, timeout=20)[0].resource["id"] == first[0].StudyInstanceUID

        proxy.cut()
        studies = [make_study(3, series=1) for _ in range(3)]
        for study in studies:
            Modality(listener.port).send_all(study)
            time.sleep(0.4)
        wait_for(
            lambda: len(list(listener.events("study finished"))) == 4,
            timeout=20,
            what="three more studies to finish during the outage",
        )
        time.sleep(2.0)
        assert amqp.depth() == 0
        proxy.restore()

        messages = amqp.drain(3, timeout=30)
        messages += amqp.drain_until_quiet(quiet=2.0, timeout=20)
    finally:
        proxy.close()

    assert [m.resource["id"] for m in messages[:3]] == [s[0].StudyInstanceUID for s in studies]
    assert_duplicates_identical(messages)
    assert {m.resource["id"] for m in messages} == {s[0].StudyInstanceUID for s in studies}
    assert len(list(listener.events("broker connection lost; retrying"))) == 1
    assert len(list(listener.events("broker connection restored"))) == 1


def test_finished_study_waiting_for_the_broker_survives_kill_9(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A study finished while the broker is unreachable is still published after a SIGKILL."""
    proxy = TcpProxy("127.0.0.1", 5672)
    proxy.cut()
    try:
        url = RABBITMQ_URL.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        listener = start_listener(quiet_period=0.3, LISTENER_AMQP__URL=url)
        study = make_study(3, series=1)
        Modality(listener.port).send_all(study)
        wait_for(lambda: any(listener.events("study finished")), timeout=20, what="the finish")
        listener.kill()
    finally:
        proxy.close()

    start_listener(quiet_period=0.3, data_dir=listener.data_dir)

    [message] = amqp.drain(1, timeout=20)
    assert message.properties.message_id == f"{study[0].StudyInstanceUID}/v1"
    assert all_instances(message.resource) == {str(d.SOPInstanceUID) for d in study}


def test_late_instance_publishes_version_2_and_identical_resend_nothing(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A late instance re-opens a published study; re-sending identical instances does not."""
    files = dicom_files(DICOMDIR_TESTS / "77654033" / "CT2")
    listener = start_listener(quiet_period=0.5)
    storescu(listener.port, files[:-1])
    [first] = amqp.drain(1, timeout=20)

    storescu(listener.port, files[-1:])
    [second] = amqp.drain(1, timeout=20)
    storescu(listener.port, files)
    time.sleep(1.5)

    assert amqp.depth() == 0
    assert first.properties.message_id.endswith("/v1")
    assert second.properties.message_id.endswith("/v2")
    assert second.properties.headers["resource_version"] == 2
    assert second.resource["meta"]["versionId"] == "2"
    expected = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert all_instances(second.resource) == expected
    assert len(all_instances(first.resource)) == len(files) - 1


def test_disk_reserve_answers_out_of_resources(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Below the free-space reserve a C-STORE gets 0xA700; nothing is journaled or left in spool."""
    listener = start_listener(LISTENER_STORAGE__MIN_FREE_MB=str(2**40))
    [dataset] = make_study(1, series=1)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    association = ae.associate("127.0.0.1", listener.port, ae_title="DICOM-LISTENER")

    status = association.send_c_store(dataset)
    association.release()

    assert status.Status == 0xA700
    assert listener.stop() == 0
    assert not list((listener.data_dir / "spool").iterdir())
    journal = sqlite3.connect(listener.data_dir / "journal.sqlite3")
    assert journal.execute("SELECT count(*) FROM instances").fetchone()[0] == 0


def test_half_written_spool_file_is_removed_at_start(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """A spool file left by a crash mid-transfer is cleaned up when the listener starts."""
    leftover = tmp_path / "data" / "spool" / "tmpabc123.dcm"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")

    listener = start_listener()

    assert not leftover.exists()
    [recovered] = listener.events("journal recovered")
    assert recovered["spool_leftovers_removed"] == 1
