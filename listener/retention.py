"""Retention: deleting the files, then the records, of studies published long enough ago.

Runs in small batches under the service lock, skipping any study that is pending again, so a late
instance never loses its files or records to a concurrent pruning.
"""

from __future__ import annotations

import threading

from listener.aggregator import Aggregator
from listener.config import StorageSettings
from listener.instance_files import InstanceFiles
from listener.journal_api import JournalStore
from listener.logs import get_logger

log = get_logger("listener.retention")

_DAY = 86_400.0
BATCH = 50


class Retention:
    """Applies ``storage.instance_retention_days`` and ``storage.study_retention_days``."""

    def __init__(
        self,
        settings: StorageSettings,
        *,
        journal: JournalStore,
        files: InstanceFiles,
        aggregator: Aggregator,
        lock: threading.Lock,
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._files = files
        self._aggregator = aggregator
        self._lock = lock

    def apply(self, now: float) -> None:
        """One pass over studies published before the cutoffs."""
        storage = self._settings
        if storage.instance_retention_days > 0 and storage.keep_instances:
            cutoff = now - storage.instance_retention_days * _DAY
            for study_uid in self._journal.published_before(cutoff, with_files=True, limit=BATCH):
                with self._lock:
                    if study_uid not in self._aggregator:
                        removed = self._files.remove_study(study_uid)
                        self._journal.mark_files_removed(study_uid)
                        log.info("instance files removed", study_uid=study_uid, files=removed)
        if storage.study_retention_days > 0:
            cutoff = now - storage.study_retention_days * _DAY
            for study_uid in self._journal.published_before(cutoff, with_files=False, limit=BATCH):
                with self._lock:
                    if study_uid not in self._aggregator:
                        self._files.remove_study(study_uid)
                        self._journal.prune_study(study_uid)
                        log.info("study records pruned", study_uid=study_uid)
