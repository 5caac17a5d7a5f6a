"""One lock per key, held only while in use: serialises work on one SOP Instance UID.

Two associations re-sending the same SOP instance at once must not interleave "compare with the
held record, place the file, journal it", or the journal could describe one content while the
file holds the other. Other SOP instances are not held up. With ``directory``, the processes of
one host (``dicom.workers``) exclude one another too: each key also takes an ``flock`` on one of
256 lock files there (a bucket of keys, so the files stay few; keys sharing a bucket wait briefly).
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_BUCKETS = 256


class KeyedLock:
    """``with locks.hold(key):`` excludes other holders of the same key only."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of ``key`` for the block; the entry is dropped when nobody wants it."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock, self._across_processes(key):
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    @contextmanager
    def _across_processes(self, key: str) -> Iterator[None]:
        """Hold the key's bucket file (a descriptor of our own: flock is per open file)."""
        if self._directory is None:
            yield
            return
        bucket = self._directory / f"{zlib.crc32(key.encode()) % _BUCKETS:02x}"
        descriptor = os.open(bucket, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def __len__(self) -> int:
        return len(self._locks)
