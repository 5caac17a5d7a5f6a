"""Spool files made ahead of need, and the threads that fsync complete ones.

Creating a file costs the thread that reads an association up to a millisecond when the file
system is busy committing other files' fsyncs (the create waits for the journal). A
:class:`SpoolPool` keeps a few empty spool files ready, made by its own threads, so a C-STORE's
data set starts streaming into one at once; the same threads fsync each complete spool file while
the C-STORE handler reads its header (see :mod:`listener.scp.spool`).

The files are empty until used, in ``spool/`` like any other spool file: the start-up recovery
removes every leftover there, and :meth:`SpoolPool.close` removes the unused ones.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

READY_FILES = 4
# fsync releases the GIL; more threads than the disk can overlap gain nothing.
SYNC_THREADS = 4


class SpoolPool:
    """A few empty spool files ready for use; fsyncs of complete ones, beside the handler."""

    def __init__(self, directory: Path, *, ready: int = READY_FILES) -> None:
        self._directory = directory
        self._wanted = ready
        self._ready: deque[tuple[int, Path]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="spool-sync")
        self._refill()

    def take(self) -> tuple[int, Path]:
        """An open, empty spool file (descriptor and path): a ready one, else a new one."""
        with self._lock:
            ready = self._ready.popleft() if self._ready else None
        self._refill()
        if ready is not None:
            return ready
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._directory)
        return fd, Path(name)

    def sync_and_close(self, fd: int) -> Future[None] | None:
        """Start fsyncing ``fd`` (then closing it); None once the pool is closed."""
        try:
            return self._threads.submit(_sync_and_close, fd)
        except RuntimeError:  # shut down: the caller closes the file itself
            return None

    def close(self) -> None:
        """Wait for the syncs under way; remove the files never used."""
        with self._lock:
            self._closed = True
        self._threads.shutdown(wait=True)
        with self._lock:
            unused, self._ready = list(self._ready), deque()
        for fd, path in unused:
            _remove(fd, path)

    def _refill(self) -> None:
        with contextlib.suppress(RuntimeError):  # shut down: nothing more to make
            self._threads.submit(self._make_ready)

    def _make_ready(self) -> None:
        """Create spool files until ``ready`` wait for use (on a pool thread)."""
        while True:
            with self._lock:
                if self._closed or len(self._ready) >= self._wanted:
                    return
            fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._directory)
            with self._lock:
                if not self._closed:
                    self._ready.append((fd, Path(name)))
                    continue
            _remove(fd, Path(name))
            return


def _sync_and_close(fd: int) -> None:
    """Make ``fd``'s data and size durable (fdatasync), then close it, also if the sync fails."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _remove(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    path.unlink(missing_ok=True)
