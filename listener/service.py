"""Wiring and lifecycle: the DICOM server, the completion and publish loops, recovery, shutdown.

Receive (:mod:`listener.intake`): spool file -> header -> file placed (fsync) -> journal commit ->
success. Completion (:mod:`listener.studies`): a due study is claimed in the journal, mapped to
FHIR and, in one fenced journal transaction, marked published and queued in the outbox, which
the :class:`OutboxRelay` drains. Nothing about pending studies is held here: every process on
the journal (``dicom.workers``, other nodes) sees the same state.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from listener.config import Settings
from listener.dicomweb import DicomWebServer
from listener.finisher import StudyFinisher, fhir_options
from listener.header import configure_lenient_reading
from listener.instance_files import InstanceFiles
from listener.intake import Intake
from listener.journal_api import JournalError, JournalStore
from listener.journal_factory import open_journal, open_probe
from listener.logs import get_logger
from listener.metrics import Metrics, MetricsServer
from listener.model import StoreOutcome
from listener.procedures import ProcedureSteps
from listener.publisher import Publisher
from listener.readiness import ReadinessProbe
from listener.relay import OutboxRelay
from listener.retention import Retention
from listener.scp import DicomServer, IncomingInstance
from listener.studies import PendingStudies

log = get_logger("listener.service")

_HOUSEKEEPING_INTERVAL = 60.0
_COMPLETION_POLL_SECONDS = 0.25


class ListenerService:
    """The running listener: owns the journal, the DICOM server and the loops."""

    def __init__(
        self,
        settings: Settings,
        *,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
        spool_dir: Path | None = None,
        worker_index: int = 0,
        listening: socket.socket | None = None,
    ) -> None:
        data_dir = settings.storage.data_dir
        self._settings = settings
        self._clock = clock
        # One per worker (dicom.workers > 1): start-up clears it, and must not clear a sibling's.
        self._spool_dir = spool_dir or data_dir / "spool"
        self._files = InstanceFiles(
            data_dir / "instances",
            keep=settings.storage.keep_instances,
            min_free_mb=settings.storage.min_free_mb,
            node=settings.storage.effective_node_name(),
        )
        self._journal = open_journal(settings.storage)
        # Who holds this process's claims in the journal: the same after a restart, so the new
        # process releases what its predecessor held (a SIGKILL leaves claims behind).
        self._holder = f"{settings.storage.effective_node_name()}/{worker_index}"
        self._finisher = StudyFinisher(self._journal, options=fhir_options(settings))
        self._studies = PendingStudies(
            self._journal,
            self._finisher,
            settings=settings.aggregator,
            clock=clock,
            holder=self._holder,
        )
        self.metrics = Metrics()
        self.metrics.studies_pending.set_function(lambda: _or_nan(self._studies.count))
        self.metrics.outbox_depth.set_function(lambda: _or_nan(self._journal.outbox_depth))
        self._intake = Intake(
            settings,
            files=self._files,
            journal=self._journal,
            studies=self._studies,
            metrics=self.metrics,
            clock=clock,
        )
        self._readiness = ReadinessProbe(
            data_dir, open_probe(settings.storage), min_free_mb=settings.storage.min_free_mb
        )
        self._relay = OutboxRelay(
            self._journal,
            publisher,
            backoff_max_seconds=settings.amqp.reconnect_max_seconds,
            metrics=self.metrics,
            clock=clock,
            holder=self._holder,
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
        self._stopping = threading.Event()
        self._wake_completion = threading.Event()
        self.procedures = ProcedureSteps(
            journal=self._journal,
            finisher=self._finisher,
            files=self._files,
            settings=settings.aggregator,
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
            listening=listening,
        )
        self._threads: list[threading.Thread] = []
        self._next_housekeeping = 0.0
        self._retention = Retention(settings.storage, journal=self._journal, files=self._files)

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
        pending = _or_nan(self._studies.count)
        self._readiness.close()
        self._intake.close()
        self._journal.close()
        log.info("stopped", pending_studies=None if math.isnan(pending) else int(pending))

    def _wake(self) -> None:
        """Look for due studies now (an MPPS changed what is due), and publish what is queued."""
        self._wake_completion.set()
        self._relay.notify()

    def readiness(self) -> list[str]:
        """Why a C-STORE now would be refused (empty when ready); the broker is not a reason."""
        return self._readiness.problems()

    def _recover(self) -> None:
        """Clear spool files a crash left behind and old files of moved instances.

        Pending studies need no rebuilding: their state is the journal's, which the completion
        loop reads.
        """
        leftovers = list(self._spool_dir.glob("*")) if self._spool_dir.exists() else []
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        self._journal.release_holder(self._holder)
        stale = self._journal.stale_files()  # moved instances' old files a crash left behind
        for path in stale:
            self._files.remove(path)
            self._journal.forget_stale_file(path)
        for row in self._journal.pending_studies():
            self._check_pending(row.study_uid)
        log.info(
            "journal recovered",
            pending_studies=self._studies.count(),
            outbox=self._journal.outbox_depth(),
            spool_leftovers_removed=len(leftovers),
            stale_files_removed=len(stale),
        )

    def _check_pending(self, study_uid: str) -> None:
        """Warn about this node's journaled instances of a pending study whose file is gone.

        The records still describe the instances, so they stay in the resource. A pending study
        without records (journals before schema 3 left one where its instances moved) is settled.
        """
        records = self._journal.study_records(study_uid)
        if not records:
            self._journal.settle_if_empty(study_uid)
            return
        node = self._settings.storage.effective_node_name()
        missing = [
            record.sop_instance_uid
            for record in records
            if record.node in ("", node) and not self._files.exists(record)
        ]
        if missing:
            log.warning(
                "instance files missing for journaled instances",
                study_uid=study_uid,
                missing=len(missing),
                first_missing=missing[0],
            )

    # -- receive path (association threads) ----------------------------------------------------

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        """Make one received instance durable; success only once its record is committed."""
        return self._intake.receive(incoming)

    # -- completion loop -----------------------------------------------------------------------

    def finish_due_studies(self) -> int:
        """Finish every due study no other process holds; return how many this one finished."""
        finished = self._studies.finish_due()
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
            # Other processes record instances too: look again soon rather than at a due time.
            wait = _COMPLETION_POLL_SECONDS
            self._wake_completion.wait(wait)
            self._wake_completion.clear()


def _or_nan(read: Callable[[], int]) -> float:
    """A journal count for /metrics; NaN while the journal cannot be read (database down)."""
    try:
        return float(read())
    except JournalError:
        return math.nan
