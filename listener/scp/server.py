"""The Storage SCP: a pynetdicom AE answering C-ECHO and C-STORE.

Received datasets are streamed into a spool file (never held in memory) by each association's
:class:`~listener.scp.receive.Receiver`, which refuses what cannot be kept before it is stored;
the handler passes that file to an :class:`InstanceSink` and turns its :class:`StoreOutcome` into
a C-STORE status. A watchdog cuts associations whose message arrives too slowly. Connections reach
pynetdicom only through :class:`GuardedServer` (TLS, deadlines, caps).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, DimseServiceType

from listener.config import DicomSettings
from listener.dicom_codes import VERIFICATION
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.model import StoreOutcome
from listener.ratelimit import PerKeyLimit
from listener.scp import receive, wakeup
from listener.scp.admission import GuardLimits, PeerRules
from listener.scp.contexts import (
    COMMENT_FOR_OUTCOME,
    STATUS_FOR_OUTCOME,
    storage_sop_classes,
    transfer_syntaxes,
)
from listener.scp.dimse_n import MPPS, UNCOMPRESSED, WorkflowHandlers, WorkflowSink
from listener.scp.guard import GuardedServer, server_tls_context
from listener.scp.incoming import ReceiveLimits, Refusal
from listener.scp.negotiation import StorageNegotiation
from listener.scp.report_channel import STORAGE_COMMITMENT
from listener.scp.spool_pool import SpoolPool
from listener.scp.watchdog import Watchdog

log = get_logger("listener.scp")
_MB = 1024 * 1024

# Refused connections and rejected associations: log lines per source address and minute.
REFUSALS_LOGGED, REFUSAL_WINDOW_SECONDS = 10, 60.0


@dataclass(frozen=True, slots=True)
class IncomingInstance:
    """What the C-STORE request says about the dataset it carries."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str
    digest: str = ""  # content_digest(path), taken while spooling; "" when unknown
    # Waits for the file's data sync started when it was complete (raises its OSError); None:
    # the sink must fsync the file itself.
    synced: Callable[[], None] | None = None
    size: int | None = None  # bytes in the file, as spooled; None: the sink asks the disk


class InstanceSink(Protocol):
    """Takes a spooled instance and decides its fate (the service's receive path)."""

    def receive(self, incoming: IncomingInstance) -> StoreOutcome:
        """Store the instance durably, or say why not. Must not raise."""


@dataclass
class _AssociationStats:
    calling_ae: str
    peer: str
    started: float
    outcomes: dict[str, int] = field(default_factory=dict)


class DicomServer:
    """Runs the AE in background threads; :meth:`stop` drains associations before returning."""

    def __init__(
        self,
        settings: DicomSettings,
        sink: InstanceSink,
        *,
        spool_dir: Path,
        metrics: Metrics,
        procedures: WorkflowSink,
        min_free_mb: int = 0,
        listening: socket.socket | None = None,
    ) -> None:
        self._settings = settings
        self._listening = listening  # dicom.workers: accept from the supervisor's socket
        self._limits = ReceiveLimits(
            spool_dir=spool_dir,
            max_instance_bytes=settings.max_instance_mb * _MB,
            max_other_dataset_bytes=settings.max_other_dataset_mb * _MB,
            min_free_bytes=min_free_mb * _MB,
            window_seconds=settings.dimse_timeout_seconds,
            min_bytes_per_second=settings.min_transfer_bytes_per_second,
        )
        self._watchdog = Watchdog(period=min(1.0, settings.dimse_timeout_seconds / 4))
        self._sink = sink
        self._workflow = WorkflowHandlers(settings, procedures)
        self._spool_dir = spool_dir
        self._metrics = metrics
        self._server: GuardedServer | None = None
        self._peer_rules = PeerRules(settings.peer_addresses)
        # Keyed by the association itself, so an association that vanishes leaves nothing behind.
        self._stats: weakref.WeakKeyDictionary[Association, _AssociationStats] = (
            weakref.WeakKeyDictionary()
        )
        self._stats_lock = threading.Lock()
        self._refusal_log = PerKeyLimit(limit=REFUSALS_LOGGED, window=REFUSAL_WINDOW_SECONDS)
        self._spool_pool: SpoolPool | None = None

    def start(self) -> None:
        """Bind the port and start accepting associations."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        # pynetdicom spools datasets with tempfile: keep them on data_dir's filesystem so moving
        # them into place is an atomic rename, and so leftovers of a crash can be found and removed.
        tempfile.tempdir = str(self._spool_dir)
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.LOG_HANDLER_LEVEL = "none"
        self._spool_pool = SpoolPool(self._spool_dir)
        wakeup.install()  # the DUL answers as soon as there is work, not at its next 1 ms poll
        settings = self._settings
        syntaxes = transfer_syntaxes()
        negotiation = StorageNegotiation(
            storage_sop_classes(), syntaxes, accept_unknown=settings.accept_unknown_sop_classes
        )
        ae = _build_ae(settings, negotiation.served, syntaxes)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_REJECTED, self._on_rejected),
            *self._workflow.bindings(),
            *negotiation.bindings(),
        ]
        tls = server_tls_context(settings.tls)
        server = ae.make_server(
            (settings.host, settings.port),
            evt_handlers=handlers,
            server_class=GuardedServer,
            backlog=settings.listen_backlog,
            listening=self._listening,
        )
        assert isinstance(server, GuardedServer)
        server.guard(tls=tls, limits=self._guard_limits(), on_refused=self._on_connection_refused)
        threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        self._watchdog.start()
        self._server = server
        self._metrics.associations_active.set_function(lambda: self.active_associations)
        log.info(
            "dicom listening",
            ae_title=settings.ae_title,
            host=settings.host,
            port=settings.port,
            tls=tls is not None,
            client_certificates=bool(settings.tls.ca_file),
        )

    def _guard_limits(self) -> GuardLimits:
        settings = self._settings
        return GuardLimits(
            request_timeout=settings.acse_timeout_seconds,
            idle_timeout=settings.idle_timeout_seconds,
            idle_timeout_before_dimse=settings.idle_timeout_before_dimse_seconds,
            max_pending=settings.max_pending_connections,
            max_pending_per_address=settings.max_pending_connections_per_address,
            max_associations_per_address=settings.max_associations_per_address,
            max_pdu_size=settings.max_pdu_size,
            on_tick=self._log_suppressed_refusals,
        )

    @property
    def active_associations(self) -> int:
        """How many associations are open right now."""
        return len(self._server.active_associations) if self._server else 0

    def stop(self, *, grace_seconds: float) -> None:
        """Stop accepting; let open associations finish for ``grace_seconds``, then abort them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._watchdog.stop()
        deadline = time.monotonic() + grace_seconds
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for association in server.active_associations:
            log.warning(
                "aborting association at shutdown", calling_ae=association.requestor.ae_title
            )
            association.abort()
        self._log_suppressed_refusals(all_windows=True)
        if self._spool_pool is not None:
            self._spool_pool.close()
        log.info("dicom stopped")

    def _on_c_store(self, event: evt.Event) -> int | Dataset:
        request = event.request
        assert isinstance(request, C_STORE)
        receiver = event.assoc.dimse
        spooled = receiver.spooled_of(request) if isinstance(receiver, receive.Receiver) else None
        incoming = IncomingInstance(
            path=Path(event.dataset_path),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            calling_ae=event.assoc.requestor.ae_title,
            digest="" if spooled is None else spooled.digest,
            synced=None if spooled is None else spooled.synced,
            size=None if spooled is None else spooled.size,
        )
        try:
            outcome = self._sink.receive(incoming)
        except Exception:
            log.exception("instance handling failed", sop_instance_uid=incoming.sop_instance_uid)
            outcome = StoreOutcome.FAILED
        self._count(event.assoc, outcome)
        return _c_store_status(outcome)

    def _count(self, association: Association, outcome: StoreOutcome) -> None:
        with self._stats_lock:
            stats = self._stats.get(association)
            if stats is not None:
                stats.outcomes[outcome.value] = stats.outcomes.get(outcome.value, 0) + 1
        self._metrics.instances_received.labels(outcome.value).inc()

    def _on_connection(self, event: evt.Event) -> None:
        """Receive this association's messages through a bounded :class:`Receiver`."""
        receiver = receive.install(event.assoc, self._limits, self._on_refused, self._spool_pool)
        self._watchdog.add(receiver)

    def _on_refused(
        self, association: Association, request: DimseServiceType, refusal: Refusal
    ) -> None:
        """Count and log a message refused before it reached its handler."""
        if refusal.outcome is not None:
            self._count(association, refusal.outcome)
        log.warning(
            "instance refused" if isinstance(request, C_STORE) else "message refused",
            reason=refusal.reason,
            status=f"0x{refusal.status:04X}",
            sop_instance_uid=str(getattr(request, "AffectedSOPInstanceUID", "") or ""),
            calling_ae=association.requestor.ae_title,
        )

    def _on_requested(self, event: evt.Event) -> None:
        """Apply the per-AE address rules, which pynetdicom does not know."""
        association = event.assoc
        calling_ae = _calling_ae(association)
        if not self._peer_rules.allows(calling_ae, association.requestor.address):
            # Permanent, by the service user: calling AE title not recognised (from there).
            association.acse.send_reject(0x01, 0x01, 0x03)
            evt.trigger(association, evt.EVT_REJECTED, {})
            association.kill()

    def _on_connection_refused(self, reason: str, peer: str) -> None:
        self._metrics.connections_refused.labels(reason.split(":", maxsplit=1)[0]).inc()
        if self._refusal_log.admit(peer.rpartition(":")[0] or peer):
            log.warning("connection refused before association", reason=reason, peer=peer)

    def _log_suppressed_refusals(self, *, all_windows: bool = False) -> None:
        """One line per address whose refusals went over the per-minute limit (not logged)."""
        for address, count in self._refusal_log.expired(all_windows=all_windows):
            log.warning(
                "refusals not logged",
                peer_address=address,
                count=count,
                window_s=REFUSAL_WINDOW_SECONDS,
            )

    def _on_accepted(self, event: evt.Event) -> None:
        self._metrics.associations.labels("accepted").inc()
        requestor = event.assoc.requestor
        with self._stats_lock:
            self._stats[event.assoc] = _AssociationStats(
                calling_ae=requestor.ae_title,
                peer=f"{requestor.address}:{requestor.port}",
                started=time.monotonic(),
            )

    def _on_ended(self, event: evt.Event, how: str) -> None:
        with self._stats_lock:
            stats = self._stats.pop(event.assoc, None)
        if stats is None:
            return
        log.info(
            "association ended",
            calling_ae=stats.calling_ae,
            peer=stats.peer,
            how=how,
            instances=sum(stats.outcomes.values()),
            outcomes=stats.outcomes,
            duration_s=round(time.monotonic() - stats.started, 3),
        )

    def _on_rejected(self, event: evt.Event) -> None:
        self._metrics.associations.labels("rejected").inc()
        requestor = event.assoc.requestor
        if not self._refusal_log.admit(requestor.address):
            return
        rejection = event.assoc.acceptor.primitive
        log.warning(
            "association rejected",
            reason=rejection.reason_str if rejection is not None else "",
            calling_ae=_calling_ae(event.assoc),
            called_ae=requestor.primitive.called_ae_title if requestor.primitive else "",
            peer=f"{requestor.address}:{requestor.port}",
        )


def _c_store_status(outcome: StoreOutcome) -> int | Dataset:
    """The C-STORE status of ``outcome``, with an Error Comment where one is defined."""
    comment = COMMENT_FOR_OUTCOME.get(outcome)
    if comment is None:
        return STATUS_FOR_OUTCOME[outcome]
    status = Dataset()
    status.Status = STATUS_FOR_OUTCOME[outcome]
    status.ErrorComment = comment
    return status


def _calling_ae(association: Association) -> str:
    """The calling AE title as requested (set before pynetdicom fills in ``ae_title``)."""
    primitive = association.requestor.primitive
    return str(primitive.calling_ae_title).strip() if primitive is not None else ""


def _build_ae(settings: DicomSettings, sop_classes: Iterable[str], syntaxes: list[str]) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = settings.require_called_ae_title
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.network_timeout = settings.idle_timeout_seconds
    if settings.allowed_calling_ae_titles:
        ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.add_supported_context(VERIFICATION, syntaxes)
    for uid in sop_classes:
        ae.add_supported_context(uid, syntaxes)
    ae.add_supported_context(MPPS, UNCOMPRESSED)
    # Accept the SCP role a commitment requestor may propose, so the result can come back on the
    # same association (PS3.4 J.3.3.1.2).
    ae.add_supported_context(STORAGE_COMMITMENT, UNCOMPRESSED, scu_role=True, scp_role=True)
    return ae
