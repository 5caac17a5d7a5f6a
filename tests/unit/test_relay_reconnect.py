"""The publish loop's reconnects: quick once the broker answers again, whatever the backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from listener.config import load_settings
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
        self.refused_probes = 0  # port checks that found it closed since the last attempt
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def connect(self) -> None:
        self.refused_probes = 0
        self.attempts += 1
        if not self.up.is_set():
            raise PublishError("cannot connect to the broker: connection refused")
        self._open = True

    def publish(self, message: Message) -> None:
        self.connect()

    def idle(self, seconds: float) -> None:
        return None

    def reachable(self) -> bool:
        if not self.up.is_set():
            self.refused_probes += 1
        return self.up.is_set()

    def close(self) -> None:
        self._open = False


def _run_relay(journal: Journal, broker: Broker, **options: Any) -> Callable[[], None]:
    """Start the relay's loop in a thread; returns the function that stops it."""
    relay = OutboxRelay(journal, broker, metrics=Metrics(), **options)
    stopping = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stopping,), daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=10)

    return stop


def test_an_outage_logs_one_warning_a_debug_per_attempt_and_one_info(
    tmp_path: Path, json_logs: Callable[[], list[dict[str, Any]]]
) -> None:
    """Down: one WARNING and a DEBUG line per failed attempt; back: one INFO; never an ERROR."""
    journal = Journal(tmp_path / "journal.sqlite3")
    broker = Broker()
    stop = _run_relay(journal, broker, backoff_max_seconds=0.1)
    try:
        wait_for(lambda: broker.attempts >= 5, timeout=10, what="several failed attempts")
        broker.up.set()
        wait_for(
            lambda: any(line["event"] == "broker connection restored" for line in json_logs()),
            timeout=10,
            what="the INFO line",
        )
    finally:
        stop()
        journal.close()

    relay_lines = [line for line in json_logs() if line.get("logger") == "listener.relay"]
    by_level: dict[str, list[str]] = {}
    for line in relay_lines:
        by_level.setdefault(line["level"], []).append(line["event"])
    assert by_level["warning"] == ["broker connection lost; retrying"]
    assert by_level["info"] == ["broker connection restored"]
    assert by_level["debug"].count("broker attempt failed") >= 5
    assert "error" not in by_level


def test_reconnects_within_a_second_of_the_broker_answering_despite_a_long_backoff(
    tmp_path: Path,
) -> None:
    """After 4 s down (backoff grown to 4-8 s, cap 30 s) the relay connects < 1 s after it is up."""
    journal = Journal(tmp_path / "journal.sqlite3")
    broker = Broker()
    stop = _run_relay(journal, broker, backoff_max_seconds=30)
    try:
        # Up only once the relay is waiting out the backoff after its 4th attempt: its port
        # check saw the port closed (as it would right after a refused connect).
        wait_for(
            lambda: broker.attempts >= 4 and broker.refused_probes > 0,
            timeout=10,
            what="the backoff to grow",
        )
        broker.up.set()
        back = time.monotonic()
        wait_for(lambda: broker.connected, timeout=30, what="reconnected")
        delay = time.monotonic() - back
    finally:
        stop()
        journal.close()

    assert delay < 1.0, delay


def test_the_default_reconnect_cap_is_five_seconds() -> None:
    """amqp.reconnect_max_seconds defaults to 5 s (it was 30 s: publishing waited up to that)."""
    assert load_settings(None, {}).settings.amqp.reconnect_max_seconds == 5.0
