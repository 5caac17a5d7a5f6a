"""Readiness: whether a C-STORE arriving now would be acknowledged.

Two things refuse one: free disk below ``storage.min_free_mb`` (the store is answered 0xA700) and
a journal that cannot be written (the record cannot be committed). Both are checked for real on
each ``/readyz``: the disk with ``statvfs``, the journal by writing to it (SQLite's or PostgreSQL's
:class:`~listener.journal_factory.JournalHealth`). The broker is not part of readiness: finished
studies wait in the outbox, and an unready pod would stop the DICOM traffic that the outbox exists
to keep taking. Its state is the ``dicom_listener_broker_connected`` gauge.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from listener.journal_factory import JournalHealth

_MB = 1024 * 1024


class ReadinessProbe:
    """Checks the disk reserve and the journal; :meth:`problems` is empty when ready."""

    def __init__(self, data_dir: Path, journal: JournalHealth, *, min_free_mb: int) -> None:
        self._data_dir = data_dir
        self._min_free_mb = min_free_mb
        self._journal = journal

    def problems(self) -> list[str]:
        """Why a C-STORE would be refused now (empty when it would be acknowledged)."""
        found = (self.disk_problem(), self._journal.problem())
        return [problem for problem in found if problem]

    def disk_problem(self) -> str | None:
        """The disk reserve, when free space is below it."""
        try:
            free_mb = shutil.disk_usage(self._data_dir).free // _MB
        except OSError as exc:
            return f"storage.data_dir unusable: {exc}"
        if free_mb >= self._min_free_mb:
            return None
        return (
            f"disk below storage.min_free_mb: {free_mb} MB free, {self._min_free_mb} MB"
            " required (C-STOREs are refused with 0xA700)"
        )

    def close(self) -> None:
        """Release the journal probe's connection."""
        self._journal.close()
