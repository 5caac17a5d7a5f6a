"""The receive path under real faults: full disks, huge, abandoned, slow and malformed messages.

Each test drives a real listener process; afterwards a normal study is still acknowledged and
published, without a restart.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from tests.certs import CertificateAuthority
from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, Modality, make_study
from tests.raw_dicom import (
    A_ABORT,
    COMMAND_LAST,
    DATA,
    EXPLICIT_LE,
    IMPLICIT_LE,
    P_DATA,
    RawAssociation,
    command,
    encoded,
    pdu,
    pdv,
    store_command,
)
from tests.support import AmqpTopology, ListenerProcess, http_get, metric_value, wait_for

MiB = 1024 * 1024
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MPPS = "1.2.840.10008.3.1.2.3.3"
CT_CONTEXTS = {1: (CT_IMAGE_STORAGE, EXPLICIT_LE), 3: (CT_IMAGE_STORAGE, IMPLICIT_LE)}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def big_instance(path: Path, size: int) -> Path:
    """A CT instance of about ``size`` bytes (its pixel data padded), written to ``path``."""
    [dataset] = make_study(1, series=1)
    dataset.PixelData = b"\x01" * size
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    return path


def send_file(port: int, path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """C-STORE one file with pynetdicom, streamed from disk; its response status."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="BIGSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    assert association.is_established
    try:
        return int(association.send_c_store(path).Status)
    finally:
        association.release()


def spool_bytes(listener: ListenerProcess) -> int:
    """Bytes in the listener's spool directory now."""
    spool = listener.data_dir / "spool"
    total = 0
    for entry in spool.glob("*") if spool.exists() else []:
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total


def assert_study_still_flows(listener: ListenerProcess, amqp: AmqpTopology) -> None:
    """A normal study is acknowledged and published; nothing is left in the spool."""
    study = make_study(2, series=1)
    modality = Modality(listener.port)
    modality.send_all(study)
    assert sorted(modality.acked) == sorted(str(d.SOPInstanceUID) for d in study)
    published = amqp.drain_until_quiet(quiet=1.5, timeout=20)
    assert study[0].StudyInstanceUID in {m.resource["id"] for m in published}
    assert spool_bytes(listener) == 0
    assert listener.alive
    assert not [line for line in listener.logs() if line.get("unparsed")], "raw output in the log"


def refusal_counted(listener: ListenerProcess, outcome: str) -> float:
    text = http_get(f"{listener.metrics_url}/metrics")[1]
    return metric_value(text, "dicom_listener_instances_received_total", f'outcome="{outcome}"')


@pytest.mark.parametrize("min_free_mb", [16, 0], ids=["reserve", "ENOSPC"])
def test_out_of_space_refuses_removes_the_partial_file_and_keeps_serving(
    start_listener: ListenerFactory,
    amqp: AmqpTopology,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
    min_free_mb: int,
) -> None:
    """32 MB into 24 MiB free: 0xA700, partial file gone at once, counted, logged; next works."""
    listener = start_listener(
        data_dir=small_disk / "data", LISTENER_STORAGE__MIN_FREE_MB=str(min_free_mb)
    )
    instance = big_instance(small_disk.parent / "big.dcm", 32 * MiB)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 24 * MiB))

    status = send_file(listener.port, instance, monkeypatch)

    assert status == 0xA700
    assert spool_bytes(listener) == 0
    assert shutil.disk_usage(small_disk).free > 23 * MiB
    [refused] = [e for e in listener.events("instance refused") if e.get("status") == "0xA700"]
    assert ("min_free_mb" in refused["reason"]) == (min_free_mb > 0), refused
    assert refusal_counted(listener, "out_of_resources") == 1
    assert_study_still_flows(listener, amqp)


def test_instance_over_max_instance_mb_is_not_written_past_the_limit(
    start_listener: ListenerFactory,
    amqp: AmqpTopology,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 MB with max_instance_mb=1: the spool never holds much more than 1 MiB; 0xA701."""
    listener = start_listener(LISTENER_DICOM__MAX_INSTANCE_MB="1")
    instance = big_instance(tmp_path / "big.dcm", 64 * MiB)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], spool_bytes(listener))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        status = send_file(listener.port, instance, monkeypatch)
    finally:
        done.set()
        watcher.join()

    assert status == 0xA701
    assert peak[0] <= MiB + 256 * 1024, f"spool reached {peak[0]} bytes"
    assert refusal_counted(listener, "too_large") == 1
    assert_study_still_flows(listener, amqp)


def _end_abort(raw: RawAssociation) -> None:
    raw.send(pdu(A_ABORT, b"\0\0\0\0"))


def _end_release(raw: RawAssociation) -> None:
    raw.send(pdu(0x05, b"\0\0\0\0"))


def _end_close(raw: RawAssociation) -> None:
    raw.close()


def _end_bad_pdv(raw: RawAssociation) -> None:
    raw.send(pdu(P_DATA, struct.pack(">IBB", 5000, 1, DATA) + b"x" * 10))


def test_abandoned_store_leaves_no_spool_file(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """3 MB of a data set, then abort/release/close/bad PDV: its spool file goes at once."""
    listener = start_listener()
    [dataset] = make_study(1, series=1)
    cmd = store_command(CT_IMAGE_STORAGE, str(dataset.SOPInstanceUID))
    endings = [_end_abort, _end_release, _end_close, _end_bad_pdv]

    for end in endings:
        raw = RawAssociation(listener.port, CT_CONTEXTS)
        raw.send_pdvs(pdv(1, COMMAND_LAST, cmd))
        for _ in range(48):
            raw.send_pdvs(pdv(1, DATA, b"\x08\x00" * 32768))
        wait_for(lambda: spool_bytes(listener) >= 3 * MiB, timeout=10, what="3 MB spooled")
        end(raw)
        wait_for(lambda: spool_bytes(listener) == 0, timeout=3, what=f"spool empty ({end})")
        raw.close()

    removed = list(listener.events("association ended mid-message; its partial data removed"))
    assert len(removed) == len(endings)
    assert all(line["received_bytes"] >= 3 * MiB for line in removed)
    assert_study_still_flows(listener, amqp)


def _trickle(raw: RawAssociation, *, whole_pdus: bool, interval: float, limit: float) -> float:
    """Feed a data set one byte per ``interval``; seconds until the listener cut it (or limit)."""
    started = time.monotonic()
    if not whole_pdus:
        raw.send(struct.pack(">BBI", P_DATA, 0, 100000) + struct.pack(">IBB", 99996, 1, DATA))
    while time.monotonic() - started < limit:
        try:
            raw.send(pdu(P_DATA, pdv(1, DATA, b"x")) if whole_pdus else b"x")
        except OSError:
            return time.monotonic() - started
        readable, _, _ = select.select([raw.sock], [], [], interval)
        if readable:
            try:
                data = raw.sock.recv(64)
            except OSError:
                data = b""
            if not data or data[0] == A_ABORT:
                return time.monotonic() - started
    return limit


def test_trickled_data_sets_are_cut_within_twice_the_dimse_timeout(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """16 peers trickling bytes or 1-byte PDVs fill every slot; each is cut within 2 x 2 s."""
    timeout = 2.0
    listener = start_listener(
        LISTENER_DICOM__DIMSE_TIMEOUT_SECONDS=str(timeout),
        LISTENER_DICOM__MAX_ASSOCIATIONS="16",
        # The 16 peers all come from 127.0.0.1: lift the per-address caps so each gets a slot.
        LISTENER_DICOM__MAX_ASSOCIATIONS_PER_ADDRESS="0",
        LISTENER_DICOM__MAX_PENDING_CONNECTIONS_PER_ADDRESS="0",
    )
    [dataset] = make_study(1, series=1)
    cmd = store_command(CT_IMAGE_STORAGE, str(dataset.SOPInstanceUID))
    cut_after: dict[int, float] = {}

    def peer(index: int) -> None:
        raw = RawAssociation(listener.port, CT_CONTEXTS)
        raw.send_pdvs(pdv(1, COMMAND_LAST, cmd))
        cut_after[index] = _trickle(raw, whole_pdus=index % 2 == 1, interval=1.0, limit=4 * timeout)
        raw.close()

    peers = [threading.Thread(target=peer, args=(index,)) for index in range(16)]
    for thread in peers:
        thread.start()
    for thread in peers:
        thread.join()

    assert len(cut_after) == 16
    assert max(cut_after.values()) <= 2 * timeout, cut_after
    assert len(list(listener.events("slow association cut"))) == 16
    assert_study_still_flows(listener, amqp)


def test_trickled_data_set_over_tls_is_cut_too(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """Over TLS a trickling peer is cut within 2 x dimse_timeout; a TLS store works after it."""
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("listener", server=True)
    listener = start_listener(
        LISTENER_DICOM__TLS__CERT_FILE=str(server.cert),
        LISTENER_DICOM__TLS__KEY_FILE=str(server.key),
        LISTENER_DICOM__DIMSE_TIMEOUT_SECONDS="2",
    )
    tls = ssl.create_default_context(cafile=str(ca.pem.cert))
    [dataset] = make_study(1, series=1)
    cut_after = []
    for whole_pdus in (False, True):
        raw = RawAssociation(listener.port, CT_CONTEXTS, tls=tls)
        raw.send_pdvs(pdv(1, COMMAND_LAST, store_command(CT_IMAGE_STORAGE, generate_uid())))
        cut_after.append(_trickle(raw, whole_pdus=whole_pdus, interval=1.0, limit=8.0))
        raw.close()

    assert max(cut_after) <= 4.0, cut_after
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_LE)
    association = ae.associate(
        "127.0.0.1", listener.port, ae_title="DICOM-LISTENER", tls_args=(tls, "localhost")
    )
    assert association.is_established
    assert association.send_c_store(dataset).Status == 0x0000
    association.release()
    [message] = amqp.drain(1, timeout=20)
    assert message.resource["id"] == dataset.StudyInstanceUID
    assert spool_bytes(listener) == 0


def test_pdu_trickled_before_any_message_frees_its_slot_after_the_idle_timeout(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A first PDU fed a byte a second is cut soon after the idle timeout; its slot comes back."""
    listener = start_listener(
        LISTENER_DICOM__IDLE_TIMEOUT_SECONDS="2",
        LISTENER_DICOM__DIMSE_TIMEOUT_SECONDS="2",
        LISTENER_DICOM__MAX_ASSOCIATIONS="1",
    )
    raw = RawAssociation(listener.port, CT_CONTEXTS)

    cut_after = _trickle(raw, whole_pdus=False, interval=1.0, limit=10.0)
    raw.close()

    assert cut_after <= 5.0, f"cut after {cut_after:.1f} s"
    assert_study_still_flows(listener, amqp)


def vm_hwm_kib(listener: ListenerProcess) -> int:
    """Peak resident memory of the listener process (VmHWM), in KiB."""
    assert listener.process is not None
    status = Path(f"/proc/{listener.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_large_mpps_data_set_is_refused_without_buffering_it(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """64 MB N-CREATE attribute list, max_other_dataset_mb=1: 0x0213, peak RSS barely moves."""
    listener = start_listener(LISTENER_DICOM__MAX_OTHER_DATASET_MB="1")
    before = vm_hwm_kib(listener)
    raw = RawAssociation(listener.port, {1: (MPPS, EXPLICIT_LE)})
    cmd = command(0x0140, AffectedSOPClassUID=MPPS, AffectedSOPInstanceUID=generate_uid())
    raw.store(1, cmd, b"\x08\x00" * (32 * MiB), chunk=65536)

    status = raw.status()
    raw.close()

    grown_mib = (vm_hwm_kib(listener) - before) / 1024
    assert grown_mib < 24, f"peak memory grew by {grown_mib:.0f} MiB"
    assert status == 0x0213
    assert_study_still_flows(listener, amqp)


def test_data_set_not_matching_its_context_is_refused_and_nothing_filed(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Another context, an implicit body on an explicit context, MR on a CT context: refused."""
    listener = start_listener()
    raw = RawAssociation(listener.port, CT_CONTEXTS)
    assert raw.accepted == {1: 0, 3: 0}
    study = make_study(4, series=1)
    uids = [str(d.SOPInstanceUID) for d in study]

    raw.send_pdvs(pdv(1, COMMAND_LAST, store_command(CT_IMAGE_STORAGE, uids[0])))
    raw.send_pdvs(pdv(3, 0x02, encoded(study[0], implicit=True)))
    other_context = raw.status()
    raw.store(1, store_command(CT_IMAGE_STORAGE, uids[1]), encoded(study[1], implicit=True))
    implicit_body = raw.status()
    study[2].SOPClassUID = pydicom.uid.UID(MR_IMAGE_STORAGE)
    raw.store(1, store_command(MR_IMAGE_STORAGE, uids[2]), encoded(study[2], implicit=False))
    wrong_class = raw.status()
    raw.store(1, store_command(CT_IMAGE_STORAGE, uids[3]), encoded(study[3], implicit=False))
    good = raw.status()
    raw.close()

    assert (other_context, implicit_body, wrong_class, good) == (0xC002, 0xC002, 0x0122, 0x0000)
    stored = list((listener.data_dir / "instances").rglob("*.dcm"))
    assert [path.stem for path in stored] == [uids[3]]
    assert pydicom.dcmread(stored[0]).file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert_study_still_flows(listener, amqp)


def test_odd_commands_are_answered_promptly(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """No data set: clean status; two C-STOREs in one PDU: both answered; unknown: A-ABORT."""
    listener = start_listener()
    study = make_study(2, series=1)
    raw = RawAssociation(listener.port, CT_CONTEXTS)

    no_data = command(
        0x0001,
        has_dataset=False,
        AffectedSOPClassUID=CT_IMAGE_STORAGE,
        AffectedSOPInstanceUID=generate_uid(),
        Priority=0,
    )
    raw.send_pdvs(pdv(1, COMMAND_LAST, no_data))
    no_dataset = raw.status()
    both = b"".join(
        pdv(1, COMMAND_LAST, store_command(CT_IMAGE_STORAGE, str(d.SOPInstanceUID), i))
        + pdv(1, 0x02, encoded(d, implicit=False))
        for i, d in enumerate(study, start=2)
    )
    raw.send(pdu(P_DATA, both))
    two = [raw.response(), raw.response()]
    raw.send_pdvs(pdv(1, COMMAND_LAST, command(0x0055, has_dataset=False)))
    aborted_after = raw.closed_within(5.0)
    raw.close()

    assert no_dataset == 0xC003
    assert [(int(r.MessageIDBeingRespondedTo), int(r.Status)) for r in two] == [(2, 0), (3, 0)]
    assert aborted_after is not None and aborted_after < 2.0
    assert not [e for e in listener.logs() if "Traceback" in str(e)]
    assert_study_still_flows(listener, amqp)
