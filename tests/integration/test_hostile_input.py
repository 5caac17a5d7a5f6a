"""Hostile and malformed input: each gets a clean refusal, and the listener carries on."""

from __future__ import annotations

import copy
import os
import random
import socket
import sqlite3
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config

from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, Modality, make_study
from tests.support import AmqpTopology, ListenerProcess, wait_for

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def resources(listener: ListenerProcess) -> tuple[int, int]:
    """(threads, open file descriptors) of the listener process."""
    assert listener.process is not None
    pid = listener.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def written(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def malformed_files(tmp_path: Path) -> dict[str, tuple[Path, set[int]]]:
    """Each malformed kind as a file sent raw (chunked), with the statuses that may answer it."""
    [good] = make_study(1, series=1)
    cases: dict[str, tuple[Path, set[int]]] = {}

    no_study_uid = copy.deepcopy(good)
    del no_study_uid.StudyInstanceUID
    cases["no Study Instance UID"] = (written(no_study_uid, tmp_path / "nostudy.dcm"), {0xA900})
    no_series_uid = copy.deepcopy(good)
    del no_series_uid.SeriesInstanceUID
    cases["no Series Instance UID"] = (written(no_series_uid, tmp_path / "noseries.dcm"), {0xA900})
    invalid_uid = copy.deepcopy(good)
    invalid_uid.SeriesInstanceUID = pydicom.uid.UID("1.2.abc.4")
    cases["invalid UID"] = (written(invalid_uid, tmp_path / "invalid.dcm"), {0xA901})
    long_uid = copy.deepcopy(good)
    long_uid.StudyInstanceUID = pydicom.uid.UID("1.2." + "3" * 70)
    cases["over-long UID"] = (written(long_uid, tmp_path / "long.dcm"), {0xA901})
    mismatch = copy.deepcopy(good)
    mismatch.SOPClassUID = pydicom.uid.UID(MR_IMAGE_STORAGE)  # File Meta (the request) says CT
    path = written(mismatch, tmp_path / "mismatch.dcm")
    meta_fixed = pydicom.dcmread(path)
    meta_fixed.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(CT_IMAGE_STORAGE)
    meta_fixed.save_as(path)
    cases["SOP Class not matching its presentation context"] = (path, {0xA902})
    whole = written(copy.deepcopy(good), tmp_path / "whole.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole[: len(whole) - 5000])
    cases["truncated"] = (truncated, {0xC001})
    garbage = tmp_path / "garbage.dcm"
    # The File Meta group ends 12 bytes after (0002,0000) plus its group length value.
    meta_end = 132 + 12 + struct.unpack("<I", whole[140:144])[0]
    garbage.write_bytes(whole[:meta_end] + random.Random(3).randbytes(4000))
    cases["not DICOM at all"] = (garbage, {0xC000, 0xC001})
    return cases


def test_each_malformed_dataset_gets_its_status_and_leaves_nothing(
    start_listener: ListenerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every malformed kind is refused with its documented status; the association carries on."""
    listener = start_listener()
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    association = ae.associate("127.0.0.1", listener.port, ae_title="DICOM-LISTENER")
    assert association.is_established

    statuses = {}
    for kind, (path, _expected) in malformed_files(tmp_path).items():
        statuses[kind] = association.send_c_store(path).Status
    [good] = make_study(1, series=1)
    good_path = written(good, tmp_path / "good.dcm")
    good_status = association.send_c_store(good_path).Status
    association.release()

    for kind, (_path, expected) in malformed_files(tmp_path).items():
        assert statuses[kind] in expected, f"{kind}: 0x{statuses[kind]:04X}"
    assert good_status == 0x0000
    assert listener.alive
    journal = sqlite3.connect(listener.data_dir / "journal.sqlite3")
    assert journal.execute("SELECT sop_instance_uid FROM instances").fetchall() == [
        (str(good.SOPInstanceUID),)
    ]


def test_raw_garbage_absurd_pdus_and_silence_exhaust_nothing(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Hundreds of hostile sockets later, a study still publishes; threads and fds return."""
    listener = start_listener(quiet_period=0.5, LISTENER_DICOM__ACSE_TIMEOUT_SECONDS="2")
    Modality(listener.port).send_all(make_study(1, series=1))
    amqp.drain(1, timeout=20)
    baseline_threads, baseline_fds = resources(listener)
    rng = random.Random(20261127)
    held: list[socket.socket] = []

    for index in range(300):
        connection = socket.create_connection(("127.0.0.1", listener.port))
        kind = index % 5
        if kind == 0:  # random bytes, then gone
            connection.sendall(rng.randbytes(rng.randint(1, 2048)))
            connection.close()
        elif kind == 1:  # an A-ASSOCIATE-RQ header claiming 4 GB, then silence
            connection.sendall(struct.pack(">BBI", 0x01, 0x00, 0xFFFFFFFF) + rng.randbytes(64))
            held.append(connection)
        elif kind == 2:  # connect and say nothing
            held.append(connection)
        elif kind == 3:  # connect and leave at once
            connection.close()
        else:  # a short, garbled association request
            connection.sendall(struct.pack(">BBI", 0x01, 0x00, 120) + rng.randbytes(120))
            connection.close()

    def closed_by_listener(connection: socket.socket) -> bool:
        connection.settimeout(0.05)
        try:
            return connection.recv(1) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    wait_for(
        lambda: all(closed_by_listener(c) for c in held),
        timeout=30,
        what="the listener to close every silent or stalled connection",
    )
    for connection in held:
        connection.close()
    study = make_study(3, series=1)
    Modality(listener.port).send_all(study)
    [message] = amqp.drain(1, timeout=30)
    assert message.resource["id"] == study[0].StudyInstanceUID
    wait_for(
        lambda: (
            resources(listener)[0] <= baseline_threads + 2
            and resources(listener)[1] <= baseline_fds + 2
        ),
        timeout=30,
        what=f"threads/fds back to {baseline_threads}/{baseline_fds}, now {resources(listener)}",
    )
    assert listener.alive
    refused = list(listener.events("connection refused before association"))
    assert refused, "hostile connections are logged"
