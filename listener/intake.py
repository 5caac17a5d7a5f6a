"""The receive pipeline: screen a spooled instance, read its header, place its file, record it.

Runs on the association threads. A C-STORE is answered with success only once the instance's
file is fsynced in place and its record committed durably (README "What we guarantee"); every
refusal has its own DICOM status (:class:`listener.model.StoreOutcome`).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import replace

from listener.config import Settings
from listener.header import HEADER_TAGS, HeaderError, HeaderProblem, clean_uid, read_record
from listener.instance_files import InstanceFiles, content_digest
from listener.journal_api import Change, JournalError, JournalStore
from listener.keyed_lock import KeyedLock
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.model import InstanceRecord, Resend, StoreOutcome, compare_resend, describe_change
from listener.scan import Scan, TooLarge, Truncated, scan
from listener.scp import IncomingInstance
from listener.studies import PendingStudies

log = get_logger("listener.intake")

_OUTCOME_FOR_PROBLEM = {
    HeaderProblem.NOT_DICOM: StoreOutcome.NOT_DICOM,
    HeaderProblem.MISSING_UID: StoreOutcome.MISSING_UID,
    HeaderProblem.INVALID_UID: StoreOutcome.INVALID_UID,
}
_MB = 1024 * 1024


class Intake:
    """Turns spooled C-STORE data sets into durable instances of pending studies."""

    def __init__(
        self,
        settings: Settings,
        *,
        files: InstanceFiles,
        journal: JournalStore,
        studies: PendingStudies,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._files = files
        self._journal = journal
        self._studies = studies
        self._metrics = metrics
        self._clock = clock
        # One re-send of a SOP instance at a time, in every process of this host.
        self._sop_locks = KeyedLock(settings.storage.data_dir / "locks")

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        """Make one received instance durable; success only once its record is committed."""
        size = incoming.path.stat().st_size if incoming.size is None else incoming.size
        screened = self._screen(incoming, size)
        if isinstance(screened, StoreOutcome):
            return screened
        try:
            record = read_record(incoming.path, screened)
        except HeaderError as exc:
            log.warning("instance refused", reason=str(exc), calling_ae=incoming.calling_ae)
            return _OUTCOME_FOR_PROBLEM[exc.problem]
        if (record.sop_instance_uid, record.sop_class_uid) != (
            clean_uid(incoming.sop_instance_uid),
            clean_uid(incoming.sop_class_uid),
        ):
            log.warning(
                "instance refused",
                reason="SOP Class/Instance UID differ from the C-STORE request",
                sop_instance_uid=record.sop_instance_uid,
                calling_ae=incoming.calling_ae,
            )
            return StoreOutcome.MISMATCH
        try:
            if not self._files.has_room():
                log.error("disk reserve reached; refusing", calling_ae=incoming.calling_ae)
                return StoreOutcome.OUT_OF_RESOURCES
            return self._store(incoming, record, size)
        except (OSError, JournalError) as exc:
            full = (isinstance(exc, JournalError) and exc.full) or (
                isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            )
            log.error(
                "instance not stored", error=str(exc), sop_instance_uid=record.sop_instance_uid
            )
            return StoreOutcome.OUT_OF_RESOURCES if full else StoreOutcome.FAILED

    def close(self) -> None:
        """Close the SOP-instance lock file (at shutdown)."""
        self._sop_locks.close()

    def _screen(self, incoming: IncomingInstance, size: int) -> StoreOutcome | Scan:
        """Refuse an instance that is too large or truncated; else its scan, for the header."""
        limit = self._settings.dicom.max_instance_mb * _MB  # deflated: the inflated size too
        if size > limit:
            return _too_large(incoming, size, "larger than dicom.max_instance_mb")
        try:
            return scan(str(incoming.path), HEADER_TAGS, max_inflated=limit)
        except TooLarge:
            return _too_large(incoming, size, "inflates to more than dicom.max_instance_mb")
        except Truncated as exc:
            log.warning(
                "instance refused", reason=f"truncated: {exc}", calling_ae=incoming.calling_ae
            )
            return StoreOutcome.TRUNCATED
        except OSError as exc:
            # The spool file could not be read back (EIO, ...): our failure, which a sender retries.
            log.error("spooled instance unreadable", error=str(exc), calling_ae=incoming.calling_ae)
            return StoreOutcome.FAILED

    def _store(self, incoming: IncomingInstance, record: InstanceRecord, size: int) -> StoreOutcome:
        """Compare with the held version by content digest, apply the policy, place and commit."""
        record = replace(record, digest=incoming.digest or content_digest(incoming.path))
        with self._sop_locks.hold(record.sop_instance_uid):
            held = self._journal.instance(record.sop_instance_uid)
            resend = compare_resend(held, record)
            refused = None
            if resend is Resend.IDENTICAL:
                refused = StoreOutcome.DUPLICATE
            elif held is not None and resend is Resend.CHANGED:
                refused = self._apply_changed_policy(incoming, held, record)
            if refused is not None:
                incoming.path.unlink(missing_ok=True)
                return refused
            with self._files.placing():
                placed = self._files.place(
                    incoming.path, record, size=size, synced=incoming.synced, fresh=held is None
                )
                return self._commit(placed)

    def _apply_changed_policy(
        self, incoming: IncomingInstance, held: InstanceRecord, record: InstanceRecord
    ) -> StoreOutcome | None:
        """None to store a changed re-send (new-version), else the outcome that refuses it."""
        policy = self._settings.storage.on_changed_instance
        fields = {
            "sop_instance_uid": record.sop_instance_uid,
            "study_uid": held.study_uid,
            "change": describe_change(held, record),
            "calling_ae": incoming.calling_ae,
        }
        if policy == "keep-first":
            log.warning("changed instance ignored; stored version kept", policy=policy, **fields)
            return StoreOutcome.KEPT_FIRST
        if policy == "reject":
            log.warning("changed instance refused", policy=policy, **fields)
            return StoreOutcome.CHANGED_REFUSED
        log.info("changed instance replaces the stored version", policy=policy, **fields)
        return None

    def _commit(self, record: InstanceRecord) -> StoreOutcome:
        """Record the placed instance; success only once the commit is durable."""
        now = self._clock()
        started = time.perf_counter()
        result = self._studies.record(record, now)
        # Concurrent associations share one fsync (group commit); the sender hears success only
        # after it.
        self._journal.make_durable(result.sequence)
        self._metrics.journal_commit_seconds.observe(time.perf_counter() - started)
        self._metrics.bytes_received.inc(record.size)
        if result.change is Change.DUPLICATE:
            return StoreOutcome.DUPLICATE
        if result.stale_file:
            self._remove_stale_file(result.stale_file)
        log.debug(
            "instance stored",
            study_uid=record.study_uid,
            sop_instance_uid=record.sop_instance_uid,
            patient_id=record.patient_id,
            patient_name=record.patient_name,
            patient_birth_date=record.patient_birth_date,
        )
        return StoreOutcome.STORED

    def _remove_stale_file(self, path: str) -> None:
        """Delete a moved instance's old file; a failure is retried at the next start."""
        try:
            self._files.remove(path)
            self._journal.forget_stale_file(path)
        except (OSError, JournalError) as exc:
            log.warning("old file of a moved instance not removed yet", file=path, error=str(exc))


def _too_large(incoming: IncomingInstance, size: int, reason: str) -> StoreOutcome:
    """Remove the spooled file of an instance over ``dicom.max_instance_mb`` and say why."""
    incoming.path.unlink(missing_ok=True)
    log.warning("instance refused", reason=reason, size=size, calling_ae=incoming.calling_ae)
    return StoreOutcome.TOO_LARGE
