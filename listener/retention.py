"""Retention: deleting the files, then the records, of studies published long enough ago.

Runs in small batches, one study at a time under the host's exclusive file lock (which every
process of this host placing an instance holds shared until its record is committed) and only
while the journal says the study is still published: a late instance, received by any process,
never loses its file or record to a concurrent removal.
"""

from __future__ import annotations

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
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._files = files

    def _published(self, study_uid: str) -> bool:
        row = self._journal.study(study_uid)
        return row is not None and row.state == "published"

    def apply(self, now: float) -> None:
        """One pass over studies published before the cutoffs."""
        storage = self._settings
        if storage.instance_retention_days > 0 and storage.keep_instances:
            cutoff = now - storage.instance_retention_days * _DAY
            for study_uid in self._journal.published_before(cutoff, with_files=True, limit=BATCH):
                with self._files.removing():
                    if self._published(study_uid):
                        removed = self._files.remove_study(study_uid)
                        self._journal.mark_files_removed(study_uid)
                        log.info("instance files removed", study_uid=study_uid, files=removed)
        if storage.study_retention_days > 0:
            cutoff = now - storage.study_retention_days * _DAY
            for study_uid in self._journal.published_before(cutoff, with_files=False, limit=BATCH):
                with self._files.removing():
                    if self._published(study_uid):
                        self._files.remove_study(study_uid)
                        self._journal.prune_study(study_uid)
                        log.info("study records pruned", study_uid=study_uid)
