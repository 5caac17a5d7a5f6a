"""The DICOM boundary: a pynetdicom AE answering C-ECHO and C-STORE; the only pynetdicom importer.

Received datasets are streamed by pynetdicom into a spool file (never held in memory); the handler
passes that file to an :class:`InstanceSink` and turns its :class:`StoreOutcome` into a C-STORE
status. Storage SOP classes and transfer syntaxes come from pydicom's UID dictionary, so every
class and syntax pydicom knows, retired ones and compressed ones included, is accepted as sent.
"""

from __future__ import annotations

import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydicom._uid_dict import UID_dictionary  # pydicom's table of every UID it knows
from pynetdicom import AE, _config, evt, sop_class
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from listener.config import DicomSettings
from listener.logging import get_logger
from listener.metrics import Metrics
from listener.model import StoreOutcome

log = get_logger("listener.scp")

VERIFICATION = "1.2.840.10008.1.1"
# Storage-named SOP classes that are not stored instances.
_NOT_STORAGE = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (DICOMDIR)
    "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
}
# Transfer syntaxes that are file encodings, not network encodings.
_NOT_NETWORK = {"1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2"}  # RFC 2557 MIME, XML

# C-STORE statuses (PS3.4 Annex B.2.3); docs/conformance lists them for integrators.
STATUS_FOR_OUTCOME = {
    StoreOutcome.STORED: 0x0000,
    StoreOutcome.DUPLICATE: 0x0000,
    StoreOutcome.OUT_OF_RESOURCES: 0xA700,  # Refused: Out of Resources
    StoreOutcome.MISSING_UID: 0xA900,  # Error: Data Set does not match SOP Class
    StoreOutcome.INVALID_UID: 0xA901,  # Error: Data Set does not match SOP Class (bad UID)
    StoreOutcome.MISMATCH: 0xA902,  # Error: Data Set's SOP Class/Instance differ from the request
    StoreOutcome.NOT_DICOM: 0xC000,  # Error: Cannot understand
    StoreOutcome.FAILED: 0x0110,  # Processing failure
}


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pydicom or pynetdicom knows, retired ones included, sorted."""
    from_pydicom = {
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name
    }
    known = from_pydicom | set(sop_class._STORAGE_CLASSES.values())
    return sorted(known - _NOT_STORAGE)


def transfer_syntaxes() -> list[str]:
    """Every network transfer syntax pydicom knows, uncompressed first, compressed ones included."""
    uncompressed = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
    others = sorted(
        uid
        for uid, (_name, kind, *_rest) in UID_dictionary.items()
        if kind == "Transfer Syntax" and uid not in _NOT_NETWORK and uid not in uncompressed
    )
    return uncompressed + others


@dataclass(frozen=True, slots=True)
class IncomingInstance:
    """What the C-STORE request says about the dataset it carries."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str


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
        self, settings: DicomSettings, sink: InstanceSink, *, spool_dir: Path, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._spool_dir = spool_dir
        self._metrics = metrics
        self._server: ThreadedAssociationServer | None = None
        # Keyed by the association itself, so an association that vanishes leaves nothing behind.
        self._stats: weakref.WeakKeyDictionary[Association, _AssociationStats] = (
            weakref.WeakKeyDictionary()
        )
        self._stats_lock = threading.Lock()

    def start(self) -> None:
        """Bind the port and start accepting associations."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        # pynetdicom spools datasets with tempfile: keep them on data_dir's filesystem so moving
        # them into place is an atomic rename, and so leftovers of a crash can be found and removed.
        tempfile.tempdir = str(self._spool_dir)
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.LOG_HANDLER_LEVEL = "none"
        ae = _build_ae(self._settings, storage_sop_classes(), transfer_syntaxes())
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        self._server = ae.start_server(
            (self._settings.host, self._settings.port), block=False, evt_handlers=handlers
        )
        self._metrics.associations_active.set_function(lambda: self.active_associations)
        log.info(
            "dicom listening",
            ae_title=self._settings.ae_title,
            host=self._settings.host,
            port=self._settings.port,
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
        deadline = time.monotonic() + grace_seconds
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for association in server.active_associations:
            log.warning(
                "aborting association at shutdown", calling_ae=association.requestor.ae_title
            )
            association.abort()
        log.info("dicom stopped")

    def _on_c_store(self, event: evt.Event) -> int:
        request = event.request
        assert isinstance(request, C_STORE)
        incoming = IncomingInstance(
            path=Path(event.dataset_path),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            calling_ae=event.assoc.requestor.ae_title,
        )
        try:
            outcome = self._sink.receive(incoming)
        except Exception:
            log.exception("instance handling failed", sop_instance_uid=incoming.sop_instance_uid)
            outcome = StoreOutcome.FAILED
        with self._stats_lock:
            stats = self._stats.get(event.assoc)
            if stats is not None:
                stats.outcomes[outcome.value] = stats.outcomes.get(outcome.value, 0) + 1
        self._metrics.instances_received.labels(outcome.value).inc()
        return STATUS_FOR_OUTCOME[outcome]

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
        log.warning(
            "association rejected",
            calling_ae=requestor.ae_title,
            called_ae=requestor.primitive.called_ae_title if requestor.primitive else "",
            peer=f"{requestor.address}:{requestor.port}",
        )


def verify(host: str, port: int, *, called_ae: str, calling_ae: str, timeout: float) -> int:
    """Send one C-ECHO; return its status (0x0000 = success) or raise ConnectionError."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    association = ae.associate(host, port, ae_title=called_ae)
    if not association.is_established:
        raise ConnectionError(f"no association with {called_ae}@{host}:{port}")
    try:
        status = association.send_c_echo()
    finally:
        association.release()
    if not status or "Status" not in status:
        raise ConnectionError("no C-ECHO response")
    return int(status.Status)


def _build_ae(settings: DicomSettings, sop_classes: Iterable[str], syntaxes: list[str]) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = settings.require_called_ae_title
    if settings.allowed_calling_ae_titles:
        ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.add_supported_context(VERIFICATION, syntaxes)
    for uid in sop_classes:
        ae.add_supported_context(uid, syntaxes)
    return ae
