"""The watchdog of slow messages: cuts associations whose message arrives too slowly."""

from __future__ import annotations

import threading
import time
import weakref

from listener.scp.receive import Receiver


class Watchdog:
    """Every ``period`` seconds, cuts the receivers whose message arrives too slowly."""

    def __init__(self, *, period: float) -> None:
        self._period = period
        self._lock = threading.Lock()
        self._receivers: weakref.WeakSet[Receiver] = weakref.WeakSet()
        self._running = threading.Event()

    def add(self, receiver: Receiver) -> None:
        """Watch ``receiver`` for as long as its association exists."""
        with self._lock:
            self._receivers.add(receiver)

    def start(self) -> None:
        """Start watching in a daemon thread."""
        self._running.set()
        threading.Thread(target=self._run, name="dicom-watchdog", daemon=True).start()

    def stop(self) -> None:
        """Stop after the current round."""
        self._running.clear()

    def _run(self) -> None:
        while self._running.is_set():
            time.sleep(self._period)
            with self._lock:
                receivers = list(self._receivers)
            now = time.monotonic()
            for receiver in receivers:
                reason = receiver.stalled(now)
                if reason is not None:
                    receiver.cut(reason)
