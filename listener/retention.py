"""Retention: deleting the files, then the records, of studies published long enough ago.

Each node holds its own files, so each walks the finished studies itself, in order of finishing,
with its own marks kept in its data directory (``retention-marks.json``): a study another node
pruned still has its files removed here. A study is handled under the host's exclusive file lock
(which every process of this host placing an instance holds shared until its record is committed)
and only while the journal says it is finished: a late instance, received by any process, never
loses its file or record to a concurrent removal. A study re-opened and published again is
finished later, so it comes up again past the mark.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from listener.config import StorageSettings
from listener.instance_files import InstanceFiles
from listener.journal_api import JournalStore
from listener.logs import get_logger

log = get_logger("listener.retention")

_DAY = 86_400.0
BATCH = 50
PASS_SECONDS = 5.0  # one pass stops after this long and goes on at the next one
_FILES, _RECORDS = "files", "records"


class Retention:
    """Applies ``storage.instance_retention_days`` and ``storage.study_retention_days``."""

    def __init__(
        self, settings: StorageSettings, *, journal: JournalStore, files: InstanceFiles
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._files = files
        self._marks_path = settings.data_dir / "retention-marks.json"

    def apply(self, now: float) -> None:
        """One pass over studies finished before the cutoffs, from where the last pass stopped."""
        storage = self._settings
        marks = _load_marks(self._marks_path)
        deadline = time.monotonic() + PASS_SECONDS
        if storage.instance_retention_days > 0 and storage.keep_instances:
            cutoff = now - storage.instance_retention_days * _DAY
            marks[_FILES] = self._walk(_FILES, cutoff, marks[_FILES], deadline)
        if storage.study_retention_days > 0:
            cutoff = now - storage.study_retention_days * _DAY
            marks[_RECORDS] = self._walk(_RECORDS, cutoff, marks[_RECORDS], deadline)
        _save_marks(self._marks_path, marks)

    def _walk(
        self, rule: str, cutoff: float, mark: tuple[float, str], deadline: float
    ) -> tuple[float, str]:
        """Apply ``rule`` to the studies after ``mark``; return the new mark."""
        while time.monotonic() < deadline:
            batch = self._journal.finished_before(cutoff, after=mark, limit=BATCH)
            for finished_at, study_uid in batch:
                self._apply(rule, study_uid)
                mark = (finished_at, study_uid)
            if len(batch) < BATCH:
                break
        return mark

    def _apply(self, rule: str, study_uid: str) -> None:
        """Remove this node's files of one study (and, for records, prune it) unless pending."""
        with self._files.removing():
            row = self._journal.study(study_uid)
            if row is None or row.state == "pending":
                return  # re-opened: it will finish again, later, and come up then
            removed = self._files.remove_study(study_uid)
            if rule == _RECORDS:
                self._journal.prune_study(study_uid)
                log.info("study records pruned", study_uid=study_uid, files=removed)
            else:
                self._journal.mark_files_removed(study_uid)
                log.info("instance files removed", study_uid=study_uid, files=removed)


def _load_marks(path: Path) -> dict[str, tuple[float, str]]:
    """The marks saved by the last pass; from the beginning when there are none."""
    marks = {_FILES: (0.0, ""), _RECORDS: (0.0, "")}
    try:
        saved = json.loads(path.read_text())
        for rule in marks:
            if rule in saved:
                marks[rule] = (float(saved[rule][0]), str(saved[rule][1]))
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        pass  # missing or unreadable: walking again from the start only repeats removals
    return marks


def _save_marks(path: Path, marks: dict[str, tuple[float, str]]) -> None:
    """Replace the marks file atomically (no fsync: a lost update only repeats removals).

    The temporary file is this process's and thread's own: the workers of one host share the
    marks file, and with one temporary name one worker's rename took the other's file away
    (FileNotFoundError, logged as "finishing studies failed").
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    encoded = json.dumps({rule: list(mark) for rule, mark in marks.items()}).encode()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # like all data
    try:
        os.write(descriptor, encoded)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
