"""Spool files made ahead of need.

Creating a file costs the thread that reads an association up to a millisecond when the file
system is busy committing other files' fsyncs (the create waits for the journal). A
:class:`SpoolPool` keeps a few empty spool files ready, made by its own thread, so a C-STORE's
data set starts streaming into one at once. (Complete spool files are fsynced by the thread that
read them, beside the C-STORE handler: :meth:`listener.scp.spool.SpoolFile.sync`.)

The files are empty until used, in ``spool/`` like any other spool file: the start-up recovery
removes every leftover there, and :meth:`SpoolPool.close` removes the unused ones.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

READY_FILES = 4


class SpoolPool:
    """A few empty spool files ready for use, made on a thread of its own."""

    def __init__(self, directory: Path, *, ready: int = READY_FILES) -> None:
        self._directory = directory
        self._wanted = ready
        self._ready: deque[tuple[int, Path]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="spool-ready")
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

    def close(self) -> None:
        """Stop making files; remove the ones never used."""
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


def _remove(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    path.unlink(missing_ok=True)
