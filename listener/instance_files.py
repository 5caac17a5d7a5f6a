"""Received instance files on disk: one layout per study and series, moved in atomically.

``data_dir/instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. UIDs are
validated before they get here (digits and dots only), so they are safe as path components.
An instance moved to another series or study leaves its old file, which :meth:`InstanceFiles.remove`
deletes once the move is journaled (so each SOP instance has exactly one file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from listener.model import InstanceRecord

_MB = 1024 * 1024
_PREAMBLE_AND_MAGIC = 132  # 128-byte preamble, then b"DICM"
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes, explicit VR LE
# How long a reading of the free space stands in for a new one (less what was placed since).
FREE_SPACE_READING_SECONDS = 1.0


class InstanceFiles:
    """Places spooled files, reports free space, and deletes files past their retention."""

    def __init__(
        self,
        root: Path,
        *,
        keep: bool,
        min_free_mb: int,
        node: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = root
        self._keep = keep
        self._min_free_bytes = min_free_mb * _MB
        self._node = node
        self._clock = clock
        self._free_lock = threading.Lock()
        self._free_estimate = 0  # the last reading, less every file placed since
        self._free_read_at: float | None = None

    def has_room(self) -> bool:
        """True while more than the configured reserve is free on the data disk.

        A reading of the disk serves for up to a second, less the size of every file placed
        since: a ``statvfs`` per instance cost more than the check is worth (the spool file has
        already kept the reserve while it was written).
        """
        now = self._clock()
        with self._free_lock:
            read_at = self._free_read_at
            if read_at is None or not 0 <= now - read_at < FREE_SPACE_READING_SECONDS:
                _make_directories(self._root)
                self._free_estimate = shutil.disk_usage(self._root).free
                self._free_read_at = now
            return self._free_estimate >= self._min_free_bytes

    def place(
        self,
        spooled: Path,
        record: InstanceRecord,
        *,
        size: int,
        synced: Callable[[], None] | None = None,
        fresh: bool = False,
    ) -> InstanceRecord:
        """Move ``spooled`` to its place, durably (fsync); return the record with file and size.

        ``synced``: waits for a data sync of ``spooled`` already under way (the receiver started
        it); without it the file is fsynced here. Either way its data and its name are on disk
        when this returns, before the caller commits the record. ``fresh``: no record names this
        path (a first copy of the SOP instance), so the file is renamed and its directory fsynced
        while its data sync runs; otherwise the data is synced first, so that the held version's
        file is only ever replaced by a complete one. The record also names this node
        (``storage.node_name``): with several listeners, the one that holds the file.
        """
        relative = Path(record.study_uid, record.series_uid, f"{record.sop_instance_uid}.dcm")
        if not self._keep:
            return replace(record, size=size, node=self._node)
        target = self._root / relative
        _make_directories(target.parent)
        if fresh and synced is not None:
            # No record names this path: its name is made durable while the data sync runs.
            os.replace(spooled, target)
            try:
                fsync_directory(target.parent)
                synced()
            except OSError:
                target.unlink(missing_ok=True)  # not stored: no file without its record
                raise
        else:
            if synced is not None:
                synced()
            else:
                with spooled.open("rb") as handle:
                    os.fdatasync(handle.fileno())  # data and size: what reading it back needs
            os.replace(spooled, target)
            fsync_directory(target.parent)
        with self._free_lock:
            self._free_estimate -= size
        return replace(record, file=relative.as_posix(), size=size, node=self._node)

    @contextlib.contextmanager
    def placing(self) -> Iterator[None]:
        """Hold the host's file lock shared: from placing a file until its record is committed."""
        with self._host_lock(fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def removing(self) -> Iterator[None]:
        """Hold the host's file lock alone: no process of this host places a file meanwhile."""
        with self._host_lock(fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def _host_lock(self, mode: int) -> Iterator[None]:
        """``flock`` on ``<root>.lock``: shared by every process (dicom.workers) of this host.

        A descriptor of its own each time: flock belongs to an open file, so threads sharing one
        descriptor would share (and release) one another's lock.
        """
        if not self._keep:
            yield  # no files: nothing to protect
            return
        _make_directories(self._root)
        lock_file = self._root.with_name(f"{self._root.name}.lock")
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, mode)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def remove(self, relative: str) -> None:
        """Delete a file left behind by a moved instance, and its series/study folders if empty."""
        if not relative:
            return
        path = self._root / relative
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                break

    def exists(self, record: InstanceRecord) -> bool:
        """True when the record's file is on disk (always True when files are not kept)."""
        return not self._keep or not record.file or (self._root / record.file).is_file()

    def held(self, record: InstanceRecord) -> bool:
        """True when the record's file is durably held: here, or on the node the record names.

        Another node (``storage.node_name``) fsynced its file before committing the record, so
        the record alone vouches for it; this node's own files are checked on disk.
        """
        if record.node and record.node != self._node:
            return True
        return self.exists(record)

    def remove_study(self, study_uid: str) -> int:
        """Delete every file of a study; return how many were deleted."""
        study_dir = self._root / study_uid
        if not study_dir.is_dir():
            return 0
        count = sum(1 for _ in study_dir.rglob("*.dcm"))
        shutil.rmtree(study_dir, ignore_errors=True)
        return count


def content_digest(path: Path) -> str:
    """SHA-256 (hex) of the dataset in ``path``, skipping the File Meta Information.

    The meta group is written by the receiver, not the sender; hashing what follows it makes
    the digest a property of the dataset as sent (its transfer syntax is in the record).
    """
    with path.open("rb") as handle:
        head = handle.read(_PREAMBLE_AND_MAGIC + len(_GROUP_LENGTH) + 4)
        start = 0
        if head[128:132] == b"DICM" and head[132:140] == _GROUP_LENGTH:
            start = len(head) + int.from_bytes(head[140:144], "little")
        handle.seek(start)
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _make_directories(path: Path) -> None:
    """Create ``path`` and its missing parents, each new name fsynced into its parent.

    A new directory's entry is durable only once its parent is fsynced: without that, a power
    cut can take a new study's directory, and every acknowledged file in it, away.
    """
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
