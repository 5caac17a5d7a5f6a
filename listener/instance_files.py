"""Received instance files on disk: one layout per study and series, moved in atomically.

``data_dir/instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. UIDs are
validated before they get here (digits and dots only), so they are safe as path components.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from listener.model import InstanceRecord

_MB = 1024 * 1024


class InstanceFiles:
    """Places spooled files, reports free space, and deletes files past their retention."""

    def __init__(self, root: Path, *, keep: bool, min_free_mb: int) -> None:
        self._root = root
        self._keep = keep
        self._min_free_bytes = min_free_mb * _MB

    def has_room(self) -> bool:
        """True while more than the configured reserve is free on the data disk."""
        _make_directories(self._root)
        return shutil.disk_usage(self._root).free >= self._min_free_bytes

    def place(self, spooled: Path, record: InstanceRecord, *, size: int) -> InstanceRecord:
        """Move ``spooled`` to its place, durably (fsync); return the record with file and size."""
        relative = Path(record.study_uid, record.series_uid, f"{record.sop_instance_uid}.dcm")
        if not self._keep:
            return replace(record, size=size)
        target = self._root / relative
        _make_directories(target.parent)
        with spooled.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(spooled, target)
        _fsync_directory(target.parent)
        return replace(record, file=relative.as_posix(), size=size)

    def exists(self, record: InstanceRecord) -> bool:
        """True when the record's file is on disk (always True when files are not kept)."""
        return not self._keep or not record.file or (self._root / record.file).is_file()

    def remove_study(self, study_uid: str) -> int:
        """Delete every file of a study; return how many were deleted."""
        study_dir = self._root / study_uid
        if not study_dir.is_dir():
            return 0
        count = sum(1 for _ in study_dir.rglob("*.dcm"))
        shutil.rmtree(study_dir, ignore_errors=True)
        return count


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
        _fsync_directory(directory.parent)


def _fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
