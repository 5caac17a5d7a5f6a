"""One lock per bucket of keys: serialises work on one SOP Instance UID.

Two associations re-sending the same SOP instance at once must not interleave "compare with the
held record, place the file, journal it", or the journal could describe one content while the
file holds the other. Other SOP instances are not held up, unless they share the key's bucket
(one of 64, by CRC-32: keys sharing a bucket wait briefly). With ``directory``, the processes of
one host (``dicom.workers``) exclude one another too: each bucket also takes an ``flock`` on its
lock file there, through a descriptor opened once and kept (opening it per instance cost more
than the lock itself).
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_BUCKETS = 64


class KeyedLock:
    """``with locks.hold(key):`` excludes other holders of the key's bucket only."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A bucket's thread lock is held around its flock: flock belongs to the open file, which
        # the threads of this process share.
        self._buckets = [threading.Lock() for _ in range(_BUCKETS)]
        self._descriptors: dict[int, int] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of ``key``'s bucket for the block."""
        bucket = zlib.crc32(key.encode()) % _BUCKETS
        with self._buckets[bucket]:
            descriptor = self._descriptor(bucket)
            if descriptor is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if descriptor is not None:
                    fcntl.flock(descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock files' descriptors (they reopen if the lock is used again)."""
        for bucket in range(_BUCKETS):
            with self._buckets[bucket]:
                descriptor = self._descriptors.pop(bucket, None)
                if descriptor is not None:
                    os.close(descriptor)

    def _descriptor(self, bucket: int) -> int | None:
        """The bucket's lock file, opened on first use (called holding the bucket's lock)."""
        if self._directory is None:
            return None
        descriptor = self._descriptors.get(bucket)
        if descriptor is None:
            path = self._directory / f"{bucket:02x}"
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._descriptors[bucket] = descriptor
        return descriptor
