"""The publish loop's reconnects: quick once the broker answers again, whatever the backoff."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from listener.journal import Journal
from listener.metrics import Metrics
from listener.publisher import Message, PublishError
from listener.relay import OutboxRelay
from tests.support import wait_for


class Broker:
    """A publisher whose broker is down (connect refused, port closed) until ``up`` is set."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.attempts = 0
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def connect(self) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise PublishError("cannot connect to the broker: connection refused")
        self._open = True

    def publish(self, message: Message) -> None:
        self.connect()

    def idle(self, seconds: float) -> None:
        return None

    def reachable(self) -> bool:
        return self.up.is_set()

    def close(self) -> None:
        self._open = False


def test_reconnects_within_a_second_of_the_broker_answering_despite_a_long_backoff(
    tmp_path: Path,
) -> None:
    """After 4 s down (backoff grown to 4-8 s, cap 30 s) the relay connects < 1 s after it is up."""
    journal = Journal(tmp_path / "journal.sqlite3")
    broker = Broker()
    relay = OutboxRelay(journal, broker, backoff_max_seconds=30, metrics=Metrics())
    stopping = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: broker.attempts >= 4, timeout=10, what="the backoff to grow")
        broker.up.set()
        back = time.monotonic()
        wait_for(lambda: relay.broker_connected, timeout=30, what="reconnected")
        delay = time.monotonic() - back
    finally:
        stopping.set()
        thread.join(timeout=10)
        journal.close()

    assert delay < 1.0, delay
