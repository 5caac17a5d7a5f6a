"""What a C-STORE success promises, pinned at the receive path: durable first, success after.

Each test names the guarantee it keeps: the instance file, its directory and the journal's WAL are
fsynced before the success status leaves; a journal that cannot commit answers a failure, never
success; every read of an association's socket re-arms TCP_QUICKACK.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE

from listener.journal import Journal, JournalError
from listener.scp.guard import GuardedSocket
from listener.service import ListenerService
from tests.modality import CT_IMAGE_STORAGE, make_study
from tests.support import free_port
from tests.unit.test_service import FakeClock, FakePublisher, make_service


@contextmanager
def running_service(tmp_path: Path) -> Iterator[tuple[ListenerService, int]]:
    """The listener's service in this process, serving DICOM on a free port."""
    port = free_port()
    service = make_service(tmp_path, FakePublisher(), FakeClock(), LISTENER_DICOM__PORT=str(port))
    service.start()
    try:
        yield service, port
    finally:
        service.stop(grace_seconds=1)


def store(port: int, count: int = 1) -> list[int]:
    """C-STORE ``count`` new instances in one association; their response statuses."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    assert association.is_established
    try:
        return [int(association.send_c_store(d).Status) for d in make_study(count, series=1)]
    finally:
        association.release()


class SyncSpy:
    """Records, in order, every fsync (by path) and every call of Journal.make_durable."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name), name))
        make_durable = Journal.make_durable

        def spied_make_durable(journal: Journal, sequence: int) -> None:
            self.note("make_durable", str(sequence))
            make_durable(journal, sequence)

        monkeypatch.setattr(Journal, "make_durable", spied_make_durable)

    def _wrap(self, sync: Callable[[int], None], name: str) -> Callable[[int], None]:
        def spied(descriptor: int) -> None:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            sync(descriptor)
            self.note(name, path)

        return spied

    def note(self, kind: str, detail: str) -> None:
        with self._lock:
            self.events.append((kind, detail))

    def index(self, kind: str, condition: Callable[[str], bool]) -> int:
        """Position of the first event of ``kind`` whose detail meets ``condition``."""
        for position, (event_kind, detail) in enumerate(self.events):
            if event_kind in kind.split("|") and condition(detail):
                return position
        raise AssertionError(f"no {kind} matching; events: {self.events}")


def test_success_is_sent_only_after_file_directory_and_journal_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee "durable before success": file, new directories, journal WAL, then 0x0000."""
    with running_service(tmp_path) as (_service, port):
        spy = SyncSpy(monkeypatch)
        statuses = store(port)
        spy.note("success", "")
    data = str(tmp_path / "data")
    instances = f"{data}/instances"
    [study_dir] = (tmp_path / "data" / "instances").iterdir()
    [series_dir] = study_dir.iterdir()
    fsync = "fsync|fdatasync"
    # the file's data sync may start before or after it is renamed into place (a first copy)
    file_synced = spy.index(fsync, lambda path: path.endswith(".dcm"))
    named = spy.index(fsync, lambda path: path == str(series_dir))
    durable = spy.index("make_durable", lambda _sequence: True)
    wal_synced = spy.index(fsync, lambda path: path.endswith("journal.sqlite3-wal"))
    success = spy.index("success", lambda _detail: True)
    assert statuses == [0x0000]
    # a first copy's name and data are synced side by side; both before the record is committed
    assert max(file_synced, named) < durable < wal_synced < success
    # every directory the instance's path created is itself named durably in its parent
    for parent in (instances, str(study_dir)):
        assert spy.index(fsync, parent.__eq__) < success


@pytest.mark.parametrize(
    ("method", "full", "status"),
    [
        ("add_instance", True, 0xA700),
        ("add_instance", False, 0x0110),
        ("make_durable", True, 0xA700),
        ("make_durable", False, 0x0110),
    ],
)
def test_a_journal_that_cannot_commit_never_answers_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, full: bool, status: int
) -> None:
    """Guarantee "no success without a record": a failing journal gives 0xA700 (full) or 0x0110."""

    def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise JournalError("journal write failed: injected", full=full)

    with running_service(tmp_path) as (_service, port):
        monkeypatch.setattr(Journal, method, failing)
        assert store(port, count=2) == [status, status]


@pytest.mark.parametrize(("code", "status"), [(errno.EIO, 0x0110), (errno.ENOSPC, 0xA700)])
def test_a_spool_file_that_cannot_be_synced_never_answers_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int
) -> None:
    """Guarantee "durable before success": a failed data sync of the received file is a failure."""
    fdatasync = os.fdatasync
    # A first copy may already be renamed into instances/ when its sync starts (beside it).
    received = (f"{tmp_path / 'data'}/spool/", f"{tmp_path / 'data'}/instances/")

    def failing_for_received_files(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").startswith(received):
            raise OSError(code, os.strerror(code))
        fdatasync(descriptor)

    with running_service(tmp_path) as (_service, port):
        monkeypatch.setattr(os, "fdatasync", failing_for_received_files)
        assert store(port, count=2) == [status, status]
    assert not list((tmp_path / "data" / "instances").rglob("*.dcm"))


def test_every_read_re_arms_tcp_quickack() -> None:
    """Guarantee "no delayed-ACK stall": each recv on an association socket sets TCP_QUICKACK."""
    calls: list[tuple[int, int, int]] = []

    class Recording(GuardedSocket):
        def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
            calls.append((level, option, value))
            super().setsockopt(level, option, value, *rest)

    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        receiver = Recording(fileno=accepted.detach())
        with sender, receiver:
            for chunk in (b"\x04\x00", b"\x00\x00", b"\x00\x02\xff\xff"):
                sender.sendall(chunk)
                assert receiver.recv(64) == chunk
            receiver.recv(0, socket.MSG_PEEK)
    quickack = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    assert calls == [quickack] * 3
