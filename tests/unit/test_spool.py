"""SpoolFile: a refused spool file is gone at once; the outcome says how to answer the C-STORE."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.dul import DULServiceProvider

from listener.config import load_settings
from listener.instance_files import content_digest
from listener.metrics import Metrics
from listener.model import StoreOutcome
from listener.scp import DicomServer, IncomingInstance
from listener.scp.file_meta import file_header
from listener.scp.spool import SpoolFile
from listener.scp.spool_pool import SpoolPool
from tests.support import free_port, wait_for
from tests.unit.test_ack_path import store

HEADER = b"\0" * 128 + b"DICM"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path)], check=True)
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], check=False)


def test_disk_full_refuses_out_of_resources_and_removes_the_file(tiny_disk: Path) -> None:
    """ENOSPC while writing answers 0xA700's outcome and leaves no file."""
    spool = SpoolFile(tiny_disk, meta=HEADER, max_bytes=1 << 30, min_free=0)
    outcomes = [spool.write(b"x" * 65536) for _ in range(20)]

    assert StoreOutcome.OUT_OF_RESOURCES in outcomes
    assert "errno 28" in spool.error
    assert list(tiny_disk.iterdir()) == []


def test_reserve_refuses_before_the_disk_fills(tiny_disk: Path) -> None:
    """With a reserve, the write that would cross it is refused and nothing is left."""
    spool = SpoolFile(tiny_disk, meta=HEADER, max_bytes=1 << 30, min_free=512 * 1024)
    outcomes = [spool.write(b"x" * 65536) for _ in range(20)]

    assert StoreOutcome.OUT_OF_RESOURCES in outcomes
    assert "min_free_mb" in spool.error
    assert list(tiny_disk.iterdir()) == []


def test_other_write_error_is_a_processing_failure(tmp_path: Path) -> None:
    """A write error other than a full disk (here EBADF) answers 0x0110's outcome; no file left."""
    spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=1 << 30, min_free=0)
    assert spool.write(b"x" * 100) is None
    assert spool._fd is not None
    os.close(spool._fd)  # the descriptor fails under the writer, as a broken device would

    assert spool.write(b"x" * 100) is StoreOutcome.FAILED
    assert list(tmp_path.iterdir()) == []


def test_size_limit_stops_writing_at_once(tmp_path: Path) -> None:
    """The write that passes max_bytes is refused; the file is gone, nothing past it written."""
    spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=10_000, min_free=0)

    assert spool.write(b"x" * 9000) is None
    assert spool.write(b"x" * 9000) is StoreOutcome.TOO_LARGE
    assert list(tmp_path.iterdir()) == []


def test_digest_is_the_content_digest_of_the_written_file(tmp_path: Path) -> None:
    """The digest taken while spooling equals content_digest's re-read (File Meta excluded)."""
    meta = file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1")
    spool = SpoolFile(tmp_path, meta=meta, max_bytes=1 << 30, min_free=0)
    for chunk in (b"\x08\x00\x16\x00UI", b"y" * 70_000, b"z" * 3):
        assert spool.write(chunk) is None
    assert spool.finish() is None
    assert spool.path is not None

    assert spool.digest == content_digest(spool.path)


class RecordingSink:
    """Keeps what each received instance carried, its file's digest, and who fsynced the file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.received: list[tuple[IncomingInstance, str]] = []
        self.synced_by: dict[str, threading.Thread] = {}  # file -> thread that fsynced it
        self.handled_by: list[threading.Thread] = []
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._spy(getattr(os, name)))

    def _spy(self, sync: Callable[[int], None]) -> Callable[[int], None]:
        def spied(descriptor: int) -> None:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            sync(descriptor)
            self.synced_by[path] = threading.current_thread()

        return spied

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        self.received.append((incoming, content_digest(incoming.path)))
        self.handled_by.append(threading.current_thread())
        assert incoming.synced is not None
        incoming.synced()
        return StoreOutcome.STORED


@contextmanager
def dicom_server(tmp_path: Path, sink: RecordingSink, **settings: str) -> Iterator[int]:
    """A DicomServer handing what it receives to ``sink``, serving on the port yielded."""
    port = free_port()
    environment = {"LISTENER_DICOM__PORT": str(port), "LISTENER_DICOM__HOST": "127.0.0.1"}
    dicom = load_settings(None, {**environment, **settings}).settings.dicom
    server = DicomServer(
        dicom, sink, spool_dir=tmp_path, metrics=Metrics(), procedures=cast(Any, None)
    )
    server.start()
    try:
        yield port
    finally:
        server.stop(grace_seconds=1)


def received_by_a_server(tmp_path: Path, sink: RecordingSink) -> None:
    """Two C-STOREs received by a DicomServer handing them to ``sink``."""
    with dicom_server(tmp_path, sink) as port:
        assert store(port, count=2) == [0x0000, 0x0000]


def test_a_received_instance_carries_its_content_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink gets the spool file's content digest with it, so it need not read the file again."""
    sink = RecordingSink(monkeypatch)
    received_by_a_server(tmp_path, sink)

    assert [incoming.digest for incoming, _ in sink.received] == [d for _, d in sink.received]
    assert all(len(digest) == 64 for _, digest in sink.received)


def test_a_received_file_is_fsynced_beside_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is fsynced by the thread that read it (no GIL queue first); synced() awaits it."""
    sink = RecordingSink(monkeypatch)
    received_by_a_server(tmp_path, sink)

    assert len(sink.received) == 2
    for (incoming, _), handler in zip(sink.received, sink.handled_by, strict=True):
        syncer = sink.synced_by[str(incoming.path)]
        assert isinstance(syncer, DULServiceProvider)  # the association's reading thread
        assert syncer is not handler


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # odd lengths: padded
        ("1.2.840.10008.5.1.4.1.1.12", "1.2.3", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.2", "1." + "2" * 62, "1.2.840.10008.1.2.4.50"),  # 64 chars
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3 x", "1.2.840.10008.1.2.1"),  # not plain: pydicom
    ],
)
def test_file_header_is_what_pydicom_writes(sop_class: str, sop_instance: str, syntax: str) -> None:
    """The directly encoded File Meta is byte for byte pydicom's (pynetdicom's create_file_meta)."""
    meta = create_file_meta(
        sop_class_uid=UID(sop_class),
        sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = HEADER + encode_file_meta(meta)

    assert file_header(sop_class, sop_instance, syntax) == expected


def test_a_pool_keeps_files_ready_and_removes_the_unused_ones(tmp_path: Path) -> None:
    """Spool files are made ahead, on the pool's threads; closing the pool leaves no empty file."""
    pool = SpoolPool(tmp_path, ready=3)
    try:
        wait_for(lambda: len(list(tmp_path.iterdir())) == 3, timeout=10, what="3 ready files")
        fd, path = pool.take()
        os.close(fd)
        assert path.parent == tmp_path
        wait_for(lambda: len(list(tmp_path.iterdir())) == 4, timeout=10, what="a refill")
    finally:
        pool.close()

    assert list(tmp_path.iterdir()) == [path]  # the one taken stays: its owner removes it


def test_spooling_with_a_pool_creates_no_file_on_the_writing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reading thread writes into a ready file; creating files is the pool threads' work."""
    creators: list[str] = []
    mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        creators.append(threading.current_thread().name)
        return mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    pool = SpoolPool(tmp_path, ready=2)
    try:
        wait_for(lambda: len(creators) == 2, timeout=10, what="2 ready files")
        spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=1 << 20, min_free=0, pool=pool)
        assert spool.write(b"x" * 100) is None
        assert spool.finish() is None
        assert spool.synced is not None
        assert not spool.synced.done()  # left for sync(), on the reading thread
        spool.sync()
        spool.synced.result(timeout=0)
    finally:
        pool.close()

    assert threading.current_thread().name not in creators
    assert spool.path is not None
    assert spool.path.read_bytes() == HEADER + b"x" * 100


def test_c_store_responses_skip_pynetdicoms_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain C-STORE response is sent without pynetdicom building a command-set message."""
    built: list[str] = []
    original = C_STORE_RSP.primitive_to_message

    def recording(message: C_STORE_RSP, primitive: Any) -> None:
        built.append(type(primitive).__name__)
        original(message, primitive)

    monkeypatch.setattr(C_STORE_RSP, "primitive_to_message", recording)
    received_by_a_server(tmp_path, RecordingSink(monkeypatch))  # the SCU's side answers 0x0000

    assert built == []


def test_a_finished_file_discarded_before_its_sync_is_closed_and_says_so(tmp_path: Path) -> None:
    """Discarding a file left for sync() closes it, removes it, and its handler hears an error."""
    pool = SpoolPool(tmp_path, ready=1)
    try:
        spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=1 << 20, min_free=0, pool=pool)
        assert spool.write(b"x" * 100) is None
        assert spool.finish() is None
        path, synced = spool.path, spool.synced
        assert path is not None and synced is not None
        descriptors = len(os.listdir("/proc/self/fd"))
        spool.discard()
        spool.sync()  # nothing left to sync: does nothing

        assert len(os.listdir("/proc/self/fd")) == descriptors - 1
        assert not path.exists()
        with pytest.raises(OSError, match="discarded"):
            synced.result(timeout=0)
    finally:
        pool.close()
