"""One received dataset on its way to ``spool/``: size limit, disk reserve and write errors.

A :class:`SpoolFile` writes the File Meta Information and then the dataset's bytes as they arrive.
Before each write it checks the instance size limit and the free-space reserve, and any write
error (ENOSPC, EDQUOT, EIO, ...) is caught: the partial file is removed at once and the write
answers with the outcome to refuse the instance with. Nothing is created until the first bytes
arrive, and a refused or discarded file never lingers. The dataset's bytes (not the File Meta we
write) are hashed as they pass, so the content digest needs no second read of the file.

With a :class:`~listener.scp.spool_pool.SpoolPool`, a spool file is one the pool made ready, and
:meth:`SpoolFile.finish` leaves the complete file open for :meth:`SpoolFile.sync`, which the
reading thread calls once it has handed the message to the C-STORE handler: the data sync then
runs while the handler reads the header and looks up the journal (fsync releases the GIL), and the
handler waits for :attr:`SpoolFile.synced` before the file is moved into place, so nothing is
acknowledged before its data is on disk. The reading thread has nothing else to do until the
response leaves; a pool thread, by contrast, first had to win the GIL from the handler, which
delayed the start of each sync by about 0.6 ms (README "Performance").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from concurrent.futures import Future
from pathlib import Path

from listener.model import StoreOutcome
from listener.scp.spool_pool import SpoolPool

# Free space is asked of the file system at most once per this many bytes written (statvfs is
# cheap, but not per 16 KiB PDV); in between it is estimated from what was written.
_CHECK_EVERY = 1 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(directory: Path) -> int:
    """Bytes available to us on ``directory``'s file system."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


class SpoolFile:
    """A spool file being written; refused (and removed) as soon as it cannot be kept."""

    def __init__(
        self,
        directory: Path,
        *,
        meta: bytes,
        max_bytes: int,
        min_free: int,
        pool: SpoolPool | None = None,
    ) -> None:
        """``meta``: what precedes the dataset in the file (preamble, DICM, File Meta)."""
        self._directory = directory
        self._pending_meta = meta
        self._max_bytes = max_bytes
        self._min_free = min_free
        self._fd: int | None = None
        self.path: Path | None = None
        self.size = 0
        self.error = ""
        self._refused: StoreOutcome | None = None
        self._free = 0
        self._unchecked = _CHECK_EVERY  # check on the first write
        self._hash = hashlib.sha256()
        self._pool = pool
        self.synced: Future[None] | None = None  # done once sync() has run
        self._unsynced: int | None = None  # the descriptor finish() left for sync()

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the dataset bytes written so far: ``content_digest`` of the file."""
        return self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> StoreOutcome | None:
        """Append ``data``; on refusal the file is gone and the outcome to answer is returned.

        Once refused, every later write answers the same refusal and writes nothing.
        """
        if self._refused is not None:
            return self._refused
        meta = self._pending_meta
        size = len(meta) + len(data)
        if self.size + size > self._max_bytes:
            self.error = f"larger than {self._max_bytes} bytes"
            return self._refuse(StoreOutcome.TOO_LARGE)
        if not self._has_room(size):
            return self._refuse(StoreOutcome.OUT_OF_RESOURCES)
        try:
            if self._fd is None:
                self._fd, self.path = self._create()
            if meta:
                _write_all(self._fd, meta)  # apart: joining them would copy the data
            _write_all(self._fd, data)
        except OSError as exc:
            self.error = f"{exc.strerror or exc} (errno {exc.errno})"
            return self._refuse(_outcome_of(exc))
        self._pending_meta = b""
        self.size += size
        self._hash.update(data)
        return None

    def finish(self) -> StoreOutcome | None:
        """Close the file (it stays, for the C-STORE handler); on a close error, refuse.

        With a pool the file stays open for :meth:`sync`; :attr:`synced` says when that is done
        (and raises the OSError of a failed sync or close).
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return None
        if self._pool is not None:
            self._unsynced, self.synced = fd, Future()
            return None
        try:
            os.close(fd)
        except OSError as exc:
            self.error = f"{exc.strerror or exc} (errno {exc.errno})"
            return self._refuse(_outcome_of(exc))
        return None

    def sync(self) -> None:
        """Make the finished file's data durable and close it; :attr:`synced` hears the result.

        Does nothing unless :meth:`finish` left the file for it. Never raises: a failed sync or
        close is the handler's to report (it answers a failure status).
        """
        fd, self._unsynced = self._unsynced, None
        if fd is None or self.synced is None:
            return
        try:
            sync_and_close(fd)
        except OSError as exc:
            self.synced.set_exception(exc)
        else:
            self.synced.set_result(None)

    def discard(self) -> None:
        """Close and remove the file, if there is one (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        unsynced, self._unsynced = self._unsynced, None
        if unsynced is not None and self.synced is not None:
            with contextlib.suppress(OSError):
                os.close(unsynced)
            self.synced.set_exception(OSError(errno.ENOENT, "spool file discarded"))
        path, self.path = self.path, None
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _create(self) -> tuple[int, Path]:
        if self._pool is not None:
            return self._pool.take()
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._directory)
        return fd, Path(name)

    def _has_room(self, size: int) -> bool:
        if self._min_free <= 0:
            return True  # no reserve: the disk itself says when it is full (ENOSPC)
        if self._unchecked + size >= _CHECK_EVERY:
            try:
                self._free = free_bytes(self._directory)
            except OSError:
                return True  # let the write itself find out
            self._unchecked = 0
        self._unchecked += size
        self._free -= size
        if self._free >= self._min_free:
            return True
        self.error = f"fewer than {self._min_free} bytes would stay free (storage.min_free_mb)"
        return False

    def _refuse(self, outcome: StoreOutcome) -> StoreOutcome:
        self.discard()
        self._refused = outcome
        return outcome


def sync_and_close(fd: int) -> None:
    """Make ``fd``'s data and size durable (fdatasync), then close it, also if the sync fails."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _outcome_of(exc: OSError) -> StoreOutcome:
    return StoreOutcome.OUT_OF_RESOURCES if exc.errno in _FULL else StoreOutcome.FAILED
