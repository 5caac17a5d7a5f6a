"""Deflated instances over the network: a deflate bomb is refused in bounded memory."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, _config

from listener.header import record_from_dataset
from listener.model import InstanceRecord
from tests.conftest import ListenerFactory
from tests.deflated import bomb
from tests.modality import CT_IMAGE_STORAGE
from tests.support import PYDICOM_TEST_FILES, ListenerProcess, spool_leftovers

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"  # image_dfl.dcm's SOP class
_MB = 1024 * 1024


def peak_memory(listener: ListenerProcess) -> int:
    """The listener process's peak resident memory so far (VmHWM), in bytes."""
    assert listener.process is not None
    status = Path(f"/proc/{listener.process.pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kilobytes) * 1024


def test_deflate_bomb_is_refused_in_bounded_memory_and_a_real_deflated_instance_stored(
    start_listener: ListenerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 MB inflating from 1 MB sent: 0xA701, peak memory barely moves, nothing journaled."""
    listener = start_listener(LISTENER_DICOM__MAX_INSTANCE_MB="16")
    path = tmp_path / "bomb.dcm"
    header = bomb(path, inflated_mb=200)
    assert path.stat().st_size < 16 * _MB  # only its inflation is over the limit
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # sent as it is on disk
    ae = AE(ae_title="BOMBER")
    ae.add_requested_context(CT_IMAGE_STORAGE, DeflatedExplicitVRLittleEndian)
    ae.add_requested_context(SECONDARY_CAPTURE_STORAGE, DeflatedExplicitVRLittleEndian)
    deflated = PYDICOM_TEST_FILES / "image_dfl.dcm"
    baseline = peak_memory(listener)

    association = ae.associate("127.0.0.1", listener.port, ae_title="DICOM-LISTENER")
    assert association.is_established
    bomb_status = association.send_c_store(path).Status
    deflated_status = association.send_c_store(deflated).Status
    association.release()

    assert bomb_status == 0xA701
    assert deflated_status == 0x0000
    assert peak_memory(listener) - baseline < 100 * _MB
    journal = sqlite3.connect(listener.data_dir / "journal.sqlite3")
    [(record,)] = journal.execute("SELECT record FROM instances").fetchall()
    journaled = InstanceRecord.from_json(json.loads(record))
    expected = record_from_dataset(pydicom.dcmread(deflated, stop_before_pixels=True))
    assert dataclasses.replace(journaled, file="", size=0, node="", digest="") == expected
    assert not list(listener.data_dir.glob(f"**/{header.SOPInstanceUID}*"))
    assert spool_leftovers(listener.data_dir / "spool") == []
