"""Per-key rate limits for log lines a hostile peer could otherwise multiply without end."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    seen: int = 0


class PerKeyLimit:
    """Admits the first ``limit`` events per key in each ``window`` seconds and counts the rest.

    :meth:`expired` hands back, once, each key whose window ended with events suppressed, so the
    caller can write one summary line with their number. At most ``max_keys`` keys are tracked;
    the oldest window is ended early to make room, so a peer hopping through addresses costs
    bounded memory.
    """

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()  # oldest window first
        self._ended: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def admit(self, key: str) -> bool:
        """Count one event for ``key``; True when it is within the limit."""
        with self._lock:
            now = self._clock()
            self._end_expired(now)
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self._max_keys:
                    self._end(next(iter(self._windows)))
                window = self._windows[key] = _Window(started=now)
            window.seen += 1
            return window.seen <= self.limit

    def expired(self, *, all_windows: bool = False) -> list[tuple[str, int]]:
        """``(key, suppressed)`` of windows that ended with events suppressed (all, if asked)."""
        with self._lock:
            self._end_expired(float("inf") if all_windows else self._clock())
            ended, self._ended = self._ended, []
            return ended

    def _end_expired(self, now: float) -> None:
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.started < self.window:
                return
            self._end(key)

    def _end(self, key: str) -> None:
        window = self._windows.pop(key)
        if window.seen > self.limit:
            self._ended.append((key, window.seen - self.limit))
