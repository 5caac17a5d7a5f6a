"""One lock per bucket of keys: serialises work on one SOP Instance UID.

Two associations re-sending the same SOP instance at once must not interleave "compare with the
held record, place the file, journal it", or the journal could describe one content while the
file holds the other. Other SOP instances are not held up, unless they share the key's bucket
(one of 256, by CRC-32: keys sharing a bucket wait briefly). With ``directory``, the processes of
one host (``dicom.workers``) exclude one another too: each bucket is also a one-byte POSIX record
lock in one lock file there, held through a descriptor opened once (opening a lock file per
instance cost more than the lock itself).
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
LOCK_FILE_NAME = "sop-instances.lock"


class KeyedLock:
    """``with locks.hold(key):`` excludes other holders of the key's bucket only."""

    def __init__(self, directory: Path | None = None) -> None:
        self._path = None if directory is None else directory / LOCK_FILE_NAME
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Record locks belong to the process, so the threads of this one take a bucket's thread
        # lock first; the record lock then keeps the other processes out.
        self._buckets = [threading.Lock() for _ in range(_BUCKETS)]
        self._opening = threading.Lock()
        self._descriptor: int | None = None

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of ``key``'s bucket for the block."""
        bucket = zlib.crc32(key.encode()) % _BUCKETS
        with self._buckets[bucket]:
            descriptor = self._open()
            if descriptor is not None:
                fcntl.lockf(descriptor, fcntl.LOCK_EX, 1, bucket)
            try:
                yield
            finally:
                if descriptor is not None:
                    fcntl.lockf(descriptor, fcntl.LOCK_UN, 1, bucket)

    def close(self) -> None:
        """Close the lock file (it is opened again if the lock is used again)."""
        with self._opening:
            descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)

    def _open(self) -> int | None:
        """The lock file's descriptor, opened on first use; None without a directory."""
        if self._path is None:
            return None
        with self._opening:
            if self._descriptor is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                self._descriptor = os.open(self._path, flags, 0o600)
            return self._descriptor
