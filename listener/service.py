"""Wiring: the receive path, the completion loop, housekeeping, recovery and shutdown.

Receive: spool file -> header -> file placed (fsync) -> journal commit -> aggregator -> success.
Completion: a due study is mapped to FHIR and, in one journal transaction, marked published and
queued in the outbox, which the :class:`OutboxRelay` drains. The aggregator is a cache of the
journal: :meth:`ListenerService.start` rebuilds it from the journal after any stop or crash.
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from listener.aggregator import Aggregator
from listener.config import Settings
from listener.dicomweb import DicomWebServer
from listener.finisher import Completion, StudyFinisher, fhir_options
from listener.header import (
    HEADER_TAGS,
    HeaderError,
    HeaderProblem,
    clean_uid,
    configure_lenient_reading,
    read_record,
)
from listener.instance_files import InstanceFiles, content_digest
from listener.journal_api import Change, JournalError, JournalStore
from listener.journal_factory import open_journal, open_probe
from listener.keyed_lock import KeyedLock
from listener.logs import get_logger
from listener.metrics import Metrics, MetricsServer
from listener.model import InstanceRecord, Resend, StoreOutcome, compare_resend, describe_change
from listener.procedures import ProcedureSteps
from listener.publisher import Publisher
from listener.readiness import ReadinessProbe
from listener.relay import OutboxRelay
from listener.retention import Retention
from listener.scan import Scan, TooLarge, Truncated, scan
from listener.scp import DicomServer, IncomingInstance

log = get_logger("listener.service")

_OUTCOME_FOR_PROBLEM = {
    HeaderProblem.NOT_DICOM: StoreOutcome.NOT_DICOM,
    HeaderProblem.MISSING_UID: StoreOutcome.MISSING_UID,
    HeaderProblem.INVALID_UID: StoreOutcome.INVALID_UID,
}
_MB = 1024 * 1024
_HOUSEKEEPING_INTERVAL = 60.0


class ListenerService:
    """The running listener: owns the journal, the aggregator, the DICOM server and the loops."""

    def __init__(
        self,
        settings: Settings,
        *,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        data_dir = settings.storage.data_dir
        self._settings = settings
        self._clock = clock
        self._spool_dir = data_dir / "spool"
        self._files = InstanceFiles(
            data_dir / "instances",
            keep=settings.storage.keep_instances,
            min_free_mb=settings.storage.min_free_mb,
            node=settings.storage.effective_node_name(),
        )
        self._journal = open_journal(settings.storage)
        self._aggregator = Aggregator(
            quiet_period=settings.aggregator.quiet_period_seconds,
            max_age=settings.aggregator.max_study_age_seconds,
        )
        self._finisher = StudyFinisher(self._journal, options=fhir_options(settings))
        self.metrics = Metrics()
        self.metrics.studies_pending.set_function(lambda: len(self._aggregator))
        self.metrics.outbox_depth.set_function(self._outbox_depth)
        self._readiness = ReadinessProbe(
            data_dir, open_probe(settings.storage), min_free_mb=settings.storage.min_free_mb
        )
        self._relay = OutboxRelay(
            self._journal,
            publisher,
            backoff_max_seconds=settings.amqp.reconnect_max_seconds,
            metrics=self.metrics,
            clock=clock,
        )
        self.metrics.broker_connected.set_function(lambda: float(self._relay.broker_connected))
        self._metrics_server = (
            MetricsServer(
                self.metrics,
                self.readiness,
                host=settings.metrics.host,
                port=settings.metrics.port,
            )
            if settings.metrics.enabled
            else None
        )
        self._dicomweb = (
            DicomWebServer(
                settings.dicomweb,
                logging=settings.logging,
                storage=settings.storage,
                files_root=data_dir / "instances",
                base_url=settings.dicomweb.effective_base_url(),
                metrics=self.metrics,
            )
            if settings.dicomweb.enabled
            else None
        )
        self._lock = threading.Lock()
        self._sop_locks = KeyedLock()  # one re-send of a SOP instance at a time
        self._stopping = threading.Event()
        self._wake_completion = threading.Event()
        self.procedures = ProcedureSteps(
            journal=self._journal,
            aggregator=self._aggregator,
            finisher=self._finisher,
            files=self._files,
            settings=settings.aggregator,
            lock=self._lock,
            clock=clock,
            notify=self._wake,
        )
        self._dicom = DicomServer(
            settings.dicom,
            self,
            spool_dir=self._spool_dir,
            metrics=self.metrics,
            procedures=self.procedures,
            min_free_mb=settings.storage.min_free_mb,
        )
        self._threads: list[threading.Thread] = []
        self._next_housekeeping = 0.0
        self._retention = Retention(
            settings.storage,
            journal=self._journal,
            files=self._files,
            aggregator=self._aggregator,
            lock=self._lock,
        )

    @property
    def journal(self) -> JournalStore:
        """The durable state (for inspection by the CLI and tests)."""
        return self._journal

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from the journal, then start publishing, completing and accepting DICOM."""
        configure_lenient_reading()
        self._recover()
        loops: list[tuple[Callable[[], None], str]] = [
            (lambda: self._relay.run(self._stopping), "publish"),
            (self._completion_loop, "completion"),
        ]
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._metrics_server is not None:
            self._metrics_server.start()
        if self._dicomweb is not None:
            self._dicomweb.start()
        self._dicom.start()

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop accepting, finish open stores, stop the loops; pending studies stay journaled."""
        log.info("shutting down")
        self._dicom.stop(grace_seconds=grace_seconds)
        self._stopping.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout=grace_seconds)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self._dicomweb is not None:
            self._dicomweb.stop()
        self._readiness.close()
        self._journal.close()
        log.info("stopped", pending_studies=len(self._aggregator))

    def _wake(self) -> None:
        """Look for due studies now (an MPPS changed what is due), and publish what is queued."""
        self._wake_completion.set()
        self._relay.notify()

    def _outbox_depth(self) -> float:
        """The outbox depth for /metrics; NaN while the journal cannot be read (database down)."""
        try:
            return float(self._journal.outbox_depth())
        except JournalError:
            return math.nan

    def readiness(self) -> list[str]:
        """Why a C-STORE now would be refused (empty when ready); the broker is not a reason."""
        return self._readiness.problems()

    def _recover(self) -> None:
        """Rebuild pending studies from the journal; clear spool files a crash left behind."""
        leftovers = list(self._spool_dir.glob("*")) if self._spool_dir.exists() else []
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        stale = self._journal.stale_files()  # moved instances' old files a crash left behind
        for path in stale:
            self._files.remove(path)
            self._journal.forget_stale_file(path)
        restored = 0
        for row in self._journal.pending_studies():
            records = self._journal.study_records(row.study_uid)
            if not records:
                # Its instances moved to another study (journals before schema 3 left it here).
                self._journal.settle_if_empty(row.study_uid)
                continue
            missing = [r.sop_instance_uid for r in records if not self._files.exists(r)]
            if missing:
                # The records still describe the instances, so they stay in the resource.
                log.warning(
                    "instance files missing for journaled instances",
                    study_uid=row.study_uid,
                    missing=len(missing),
                    first_missing=missing[0],
                )
            self._aggregator.restore(records, row.last_received_at, row.opened_at)
            self.procedures.recover(row.study_uid)
            restored += 1
        log.info(
            "journal recovered",
            pending_studies=restored,
            outbox=self._journal.outbox_depth(),
            spool_leftovers_removed=len(leftovers),
            stale_files_removed=len(stale),
        )

    # -- receive path (association threads) ----------------------------------------------------

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        """Make one received instance durable; success only once its record is committed."""
        size = incoming.path.stat().st_size
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
            placed = self._files.place(incoming.path, record, size=size, synced=incoming.synced)
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
        now = self._clock()
        started = time.perf_counter()
        with self._lock:
            result = self._journal.add_instance(record, now)
            if result.change is not Change.DUPLICATE:
                for study_uid in result.reopened:
                    self._aggregator.restore(self._journal.study_records(study_uid), now)
                    log.info("study re-opened by a late instance", study_uid=study_uid)
                for study_uid in result.emptied:
                    log.warning(
                        "instance moved to another study, leaving its old study empty",
                        old_study_uid=study_uid,
                        study_uid=record.study_uid,
                        sop_instance_uid=record.sop_instance_uid,
                    )
                newly_pending = record.study_uid not in self._aggregator
                self._aggregator.add(record, now)
                if newly_pending or result.reopened:
                    self.procedures.apply_waiting(record.study_uid)
        # Outside the service lock, so concurrent associations share one fsync (group commit);
        # the sender hears success only after it.
        self._journal.make_durable(result.sequence)
        self.metrics.journal_commit_seconds.observe(time.perf_counter() - started)
        self.metrics.bytes_received.inc(record.size)
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

    # -- completion loop -----------------------------------------------------------------------

    def finish_due_studies(self) -> int:
        """Finish every study whose quiet period elapsed; return how many were finished."""
        finished = 0
        with self._lock:
            now = self._clock()
            for study_uid, reason in self._aggregator.due(now):
                missing = self._aggregator.missing(study_uid)
                state = self._aggregator.pop(study_uid)
                completion = Completion(reason=reason, missing=missing)
                try:
                    message = self._finisher.finish(state, now, completion=completion)
                except JournalError:
                    self._aggregator.restore(state.latest_first[::-1], now)  # retried later
                    raise
                finished += 1
                log.info(
                    "study finished",
                    study_uid=study_uid,
                    reason=reason,
                    series=len(state.series),
                    instances=state.number_of_instances,
                    version=message.version if message else None,
                    changed=message is not None,
                )
                if missing:
                    log.warning(
                        "study published without instances its MPPS listed",
                        study_uid=study_uid,
                        missing=len(missing),
                    )
        if finished:
            self._relay.notify()
        return finished

    def housekeeping(self) -> None:
        """Apply the retention settings now (the completion loop does it every minute)."""
        self._retention.apply(self._clock())

    def _completion_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.finish_due_studies()
                if self._clock() >= self._next_housekeeping:
                    self._next_housekeeping = self._clock() + _HOUSEKEEPING_INTERVAL
                    self.housekeeping()
            except (JournalError, OSError) as exc:
                log.error("finishing studies failed; retrying", error=str(exc))
            with self._lock:
                next_due = self._aggregator.next_due_at()
            wait = 0.25 if next_due is None else min(0.25, max(0.005, next_due - self._clock()))
            self._wake_completion.wait(wait)
            self._wake_completion.clear()


def _too_large(incoming: IncomingInstance, size: int, reason: str) -> StoreOutcome:
    """Remove the spooled file of an instance over ``dicom.max_instance_mb`` and say why."""
    incoming.path.unlink(missing_ok=True)
    log.warning("instance refused", reason=reason, size=size, calling_ae=incoming.calling_ae)
    return StoreOutcome.TOO_LARGE
