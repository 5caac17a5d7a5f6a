"""Wiring: the receive path, the completion loop, the publish loop, recovery and shutdown.

Receive: spool file -> header -> file moved into place -> journal commit -> aggregator -> success.
Completion: a due study is mapped to FHIR and, in one journal transaction, marked published and
queued in the outbox. Publish: the outbox is drained in order; a message leaves it only after the
broker confirmed it. The aggregator is a cache of the journal, rebuilt from it at start.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from listener import fhir
from listener.aggregator import Aggregator
from listener.config import Settings
from listener.header import (
    HeaderError,
    HeaderProblem,
    clean_uid,
    configure_lenient_reading,
    read_record,
)
from listener.journal import Change, Journal, JournalError, JournalStore, OutboxMessage
from listener.logging import get_logger
from listener.model import InstanceRecord, StoreOutcome, StudyState
from listener.publisher import Message, Publisher, PublishError
from listener.scp import DicomServer, IncomingInstance

log = get_logger("listener.service")

_OUTCOME_FOR_PROBLEM = {
    HeaderProblem.NOT_DICOM: StoreOutcome.NOT_DICOM,
    HeaderProblem.MISSING_UID: StoreOutcome.MISSING_UID,
    HeaderProblem.INVALID_UID: StoreOutcome.INVALID_UID,
}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0


class StudyFinisher:
    """Turns due studies into outbox messages; shared by the completion loop and tests."""

    def __init__(self, journal: JournalStore, *, fhir_version: str) -> None:
        self._journal = journal
        self._fhir_version = fhir_version

    def finish(self, state: StudyState, now: float) -> OutboxMessage | None:
        """Publish ``state`` as the study's next version; None when its content did not change."""
        row = self._journal.study(state.study_uid)
        version = (row.version if row else 0) + 1
        resource = fhir.imaging_study(state, version=version, fhir_version=self._fhir_version)
        unversioned = {key: value for key, value in resource.items() if key != "meta"}
        digest = hashlib.sha256(fhir.encode(unversioned)).hexdigest()
        if row is not None and row.digest == digest:
            self._journal.finish_study(
                state.study_uid, digest=digest, message=None, finished_at=now
            )
            return None
        message = OutboxMessage(
            id=0,
            study_uid=state.study_uid,
            version=version,
            message_id=f"{state.study_uid}/v{version}",
            headers={
                "study_instance_uid": state.study_uid,
                "resource_version": version,
                "fhir_version": fhir.FHIR_RELEASES[self._fhir_version],
                "series_count": len(state.series),
                "instance_count": state.number_of_instances,
            },
            body=fhir.encode(resource),
            created_at=now,
        )
        self._journal.finish_study(state.study_uid, digest=digest, message=message, finished_at=now)
        return message


class ListenerService:
    """The running listener: owns the journal, the aggregator, the DICOM server and both loops."""

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
        self._instances_dir = data_dir / "instances"
        self._spool_dir = data_dir / "spool"
        self._journal = Journal(data_dir / "journal.sqlite3")
        self._aggregator = Aggregator(quiet_period=settings.aggregator.quiet_period_seconds)
        self._finisher = StudyFinisher(self._journal, fhir_version=settings.fhir.version)
        self._publisher = publisher
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._outbox_ready = threading.Event()
        self._dicom = DicomServer(settings.dicom, self, spool_dir=self._spool_dir)
        self._threads: list[threading.Thread] = []

    @property
    def journal(self) -> JournalStore:
        """The durable state (for inspection by the CLI and tests)."""
        return self._journal

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from the journal, then start publishing, completing and accepting DICOM."""
        configure_lenient_reading()
        self._recover()
        for target, name in (
            (self._publish_loop, "publish"),
            (self._completion_loop, "completion"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._dicom.start()

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop accepting, finish open stores, stop the loops; pending studies stay journaled."""
        log.info("shutting down")
        self._dicom.stop(grace_seconds=grace_seconds)
        self._stopping.set()
        self._outbox_ready.set()
        for thread in self._threads:
            thread.join(timeout=grace_seconds)
        self._journal.close()
        log.info("stopped", pending_studies=len(self._aggregator))

    def _recover(self) -> None:
        """Rebuild pending studies from the journal and clear spool files a crash left behind."""
        for leftover in self._spool_dir.glob("*") if self._spool_dir.exists() else ():
            leftover.unlink(missing_ok=True)
        pending = self._journal.pending_studies()
        for row in pending:
            self._aggregator.restore(
                self._journal.study_records(row.study_uid), row.last_received_at
            )
        log.info(
            "journal recovered",
            pending_studies=len(pending),
            outbox=self._journal.outbox_depth(),
        )

    # -- receive path (association threads) ----------------------------------------------------

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        """Make one received instance durable; success only once its record is committed."""
        try:
            record = read_record(incoming.path)
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
            record = self._move_into_place(incoming.path, record)
            return self._commit(record)
        except (OSError, JournalError) as exc:
            full = (isinstance(exc, JournalError) and exc.full) or getattr(exc, "errno", 0) == 28
            log.error(
                "instance not stored", error=str(exc), sop_instance_uid=record.sop_instance_uid
            )
            return StoreOutcome.OUT_OF_RESOURCES if full else StoreOutcome.FAILED

    def _move_into_place(self, spooled: Path, record: InstanceRecord) -> InstanceRecord:
        relative = Path(record.study_uid, record.series_uid, f"{record.sop_instance_uid}.dcm")
        target = self._instances_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        size = spooled.stat().st_size
        os.replace(spooled, target)
        return replace(record, file=relative.as_posix(), size=size)

    def _commit(self, record: InstanceRecord) -> StoreOutcome:
        now = self._clock()
        with self._lock:
            result = self._journal.add_instance(record, now)
            if result.change is Change.DUPLICATE:
                return StoreOutcome.DUPLICATE
            for study_uid in result.reopened:
                self._aggregator.restore(self._journal.study_records(study_uid), now)
                log.info("study re-opened by a late instance", study_uid=study_uid)
            self._aggregator.add(record, now)
        return StoreOutcome.STORED

    # -- completion loop -----------------------------------------------------------------------

    def finish_due_studies(self) -> int:
        """Finish every study whose quiet period elapsed; return how many were finished."""
        finished = 0
        with self._lock:
            now = self._clock()
            for study_uid in self._aggregator.due(now):
                state = self._aggregator.pop(study_uid)
                message = self._finisher.finish(state, now)
                finished += 1
                log.info(
                    "study finished",
                    study_uid=study_uid,
                    series=len(state.series),
                    instances=state.number_of_instances,
                    version=message.version if message else None,
                    changed=message is not None,
                )
        if finished:
            self._outbox_ready.set()
        return finished

    def _completion_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.finish_due_studies()
            except JournalError as exc:
                log.error("finishing studies failed; retrying", error=str(exc))
            with self._lock:
                next_due = self._aggregator.next_due_at()
            wait = 0.25 if next_due is None else min(0.25, max(0.005, next_due - self._clock()))
            self._stopping.wait(wait)

    # -- publish loop --------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        backoff, healthy = _BACKOFF_FIRST, True
        try:
            while not self._stopping.is_set():
                try:
                    self._publisher.connect()
                    published = self._publish_next()
                except (PublishError, JournalError) as exc:
                    if healthy:
                        log.error("publishing failed; retrying with backoff", error=str(exc))
                    healthy = False
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                if not healthy:
                    log.info("publishing resumed")
                backoff, healthy = _BACKOFF_FIRST, True
                if not published:
                    self._publisher.idle(0)
                    self._outbox_ready.wait(0.2)
        finally:
            self._publisher.close()

    def _publish_next(self) -> bool:
        """Publish the oldest outbox message; False when the outbox is empty."""
        self._outbox_ready.clear()
        message = self._journal.next_outbox()
        if message is None:
            return False
        self._publisher.publish(_wire_message(message))
        self._journal.remove_outbox(message.id)
        log.info(
            "study published",
            study_uid=message.study_uid,
            version=message.version,
            message_id=message.message_id,
            series=message.headers.get("series_count"),
            instances=message.headers.get("instance_count"),
        )
        return True


def _wire_message(message: OutboxMessage) -> Message:
    return Message(
        body=message.body,
        message_id=message.message_id,
        headers=message.headers,
        timestamp=int(message.created_at),
    )
