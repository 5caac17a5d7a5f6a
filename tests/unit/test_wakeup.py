"""pynetdicom's association thread wakes for work instead of polling (listener.scp.wakeup)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pynetdicom import AE, association
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.dul import DULServiceProvider

from listener.scp import wakeup
from listener.scp.guard import GuardedSocket
from listener.scp.incoming import ReceiveLimits
from listener.scp.receive import install
from tests.support import dcmtk_tool, free_port
from tests.unit.test_service import FakeClock, FakePublisher, make_service


@pytest.fixture
def connection() -> Iterator[tuple[GuardedSocket, socket.socket]]:
    """A guarded connection with wake-ups enabled, and its peer."""
    ours, peer = socket.socketpair()
    guarded = GuardedSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    guarded.enable_wakeups()
    yield guarded, peer
    guarded.close()
    peer.close()


def waited(connection: GuardedSocket, timeout: float) -> float:
    started = time.monotonic()
    connection.wait_for_work(timeout)
    return time.monotonic() - started


def test_a_wake_up_ends_the_wait(connection: tuple[GuardedSocket, socket.socket]) -> None:
    """wake() from another thread ends a long wait at once."""
    guarded, _peer = connection
    threading.Timer(0.05, guarded.wake).start()

    assert waited(guarded, 10) < 5


def test_incoming_data_ends_the_wait(connection: tuple[GuardedSocket, socket.socket]) -> None:
    """Data arriving on the connection ends a long wait at once."""
    guarded, peer = connection
    threading.Timer(0.05, peer.send, [b"\x04"]).start()

    assert waited(guarded, 10) < 5


def test_without_work_the_wait_lasts_its_timeout(
    connection: tuple[GuardedSocket, socket.socket],
) -> None:
    """Nothing to do: the wait is as long as the sleep it replaces (no busy loop)."""
    guarded, _peer = connection

    assert waited(guarded, 0.2) >= 0.19


def test_closing_the_connection_closes_its_wake_up_channel(
    connection: tuple[GuardedSocket, socket.socket],
) -> None:
    """The wake-up socket pair lives exactly as long as the connection."""
    guarded, _peer = connection
    pair = guarded._wake_pair
    assert pair is not None

    guarded.close()

    assert [end.fileno() for end in pair] == [-1, -1]
    guarded.wake()  # after close: nothing to wake, no error


def test_associations_are_served_without_waiting_for_the_dul_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pynetdicom's idle poll slowed to 2 s, five C-ECHOs still take well under 2 s."""
    original_init = DULServiceProvider.__init__

    def slow_polling(self: DULServiceProvider, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._run_loop_delay = 2.0

    monkeypatch.setattr(DULServiceProvider, "__init__", slow_polling)
    port = free_port()
    service = make_service(tmp_path, FakePublisher(), FakeClock(), LISTENER_DICOM__PORT=str(port))
    service.start()
    try:
        started = time.monotonic()
        echo = subprocess.run(
            [
                dcmtk_tool("echoscu"),
                "--repeat",
                "5",
                "-aec",
                "DICOM-LISTENER",
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        service.stop(grace_seconds=1)

    assert echo.returncode == 0, echo.stderr
    assert elapsed < 1.9


class _PollingReactor(Association):
    """An association thread that only runs pynetdicom's reactor poll ``polls`` times."""

    def __init__(self, polls: int, queued: bool) -> None:
        super().__init__(AE(), "acceptor")
        limits = ReceiveLimits(Path("/nonexistent"), 1, 1, 0, 1.0, 1)
        self.receiver = install(self, limits, lambda *_args: None)
        if queued:
            self.receiver.msg_queue.put((1, C_ECHO()))
        self.polls = polls
        self.elapsed = self.other_sleep = 0.0

    def run(self) -> None:
        patched_time = cast(Any, association).time  # as _run_reactor sees the time module
        started = time.monotonic()
        for _ in range(self.polls):
            patched_time.sleep(0.001)  # what _run_reactor does before each get_msg
        self.elapsed = time.monotonic() - started
        started = time.monotonic()
        patched_time.sleep(0.1)  # the abort path's delay: never shortened
        self.other_sleep = time.monotonic() - started


def test_the_reactor_poll_ends_once_a_message_is_queued() -> None:
    """With a message queued, the association's 1 ms poll returns at once (500 polls << 0.5 s).

    Its other sleeps (the abort path's 0.1 s) stay as long as pynetdicom asks.
    """
    assert wakeup.install()
    reactor = _PollingReactor(500, queued=True)
    reactor.start()
    reactor.join()

    assert reactor.elapsed < 0.25
    assert reactor.other_sleep >= 0.099


def test_the_reactor_poll_still_waits_without_a_message() -> None:
    """With nothing queued, each poll lasts its millisecond (no busy loop)."""
    assert wakeup.install()
    reactor = _PollingReactor(100, queued=False)
    reactor.start()
    reactor.join()

    assert reactor.elapsed >= 0.09
