"""DIMSE-N for workflow: the MPPS SCP (N-CREATE, N-SET) and the Storage Commitment SCP (N-ACTION).

The decisions are the service's (:class:`WorkflowSink`); this module speaks DICOM. A commitment
result (N-EVENT-REPORT) goes back on the requesting association whenever it is still open, with
default roles or any the requestor negotiated (PS3.4 J.3.3.1.2: we are its association's SCP);
only when that association is gone, or the requestor does not answer the report there with
success, does it go on a new association to the requestor, whose address comes from
``dicom.remote_aes``; that association uses TLS when ``dicom.tls`` is on. How a report goes on
the requesting association safely (after the N-ACTION response, never holding up a release) is
:mod:`listener.scp.report_channel`'s business.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION, N_CREATE, N_SET

from listener.config import DicomSettings
from listener.dicom_codes import MPPS_SOP_CLASS, UNCOMPRESSED_SYNTAXES
from listener.logs import get_logger
from listener.mpps import Status
from listener.scp.guard import client_tls_context
from listener.scp.report_channel import (
    STORAGE_COMMITMENT,
    ReportChannel,
    send_report,
)

log = get_logger("listener.scp.dimse_n")

MPPS = MPPS_SOP_CLASS
UNCOMPRESSED = list(UNCOMPRESSED_SYNTAXES)
_NO_SUCH_OBJECT_INSTANCE = 0x0112
_INVALID_ARGUMENT, _NO_SUCH_ACTION = 0x0115, 0x0123
_REPORT_ATTEMPTS = 3

Pair = tuple[str, str]


class WorkflowSink(Protocol):
    """The service side of MPPS and Storage Commitment."""

    def create(self, sop_instance_uid: str, attributes: Dataset) -> tuple[Status, str]:
        """N-CREATE of an MPPS."""

    def update(
        self, sop_instance_uid: str, modification: Dataset
    ) -> tuple[Status, str, Dataset | None]:
        """N-SET of an MPPS."""

    def commitment(self, references: list[Pair]) -> tuple[list[Pair], list[Pair]]:
        """Split references into committed and failed."""


def _status(status: int, comment: str) -> Dataset:
    result = Dataset()
    result.Status = status
    if comment:
        result.ErrorComment = comment[:64]
    return result


class WorkflowHandlers:
    """pynetdicom event handlers for MPPS and Storage Commitment."""

    def __init__(self, settings: DicomSettings, sink: WorkflowSink) -> None:
        self._settings = settings
        self._sink = sink
        self._same_association = ReportChannel()

    def bindings(self) -> list[Any]:
        """``evt_handlers`` entries for the AE's server."""
        return [
            (evt.EVT_N_CREATE, self._on_n_create),
            (evt.EVT_N_SET, self._on_n_set),
            (evt.EVT_N_ACTION, self._on_n_action),
        ]

    def _on_n_create(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_CREATE)
        requested = request.AffectedSOPInstanceUID
        uid = str(requested or generate_uid())
        status, comment = self._sink.create(uid, event.attribute_list)
        if status != Status.SUCCESS:
            log.warning("mpps n-create refused", status=f"0x{status:04X}", reason=comment)
            return _status(status, comment), None
        reply = Dataset()
        if not requested:
            reply.AffectedSOPInstanceUID = uid
        return _status(0x0000, ""), reply

    def _on_n_set(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_SET)
        uid = str(request.RequestedSOPInstanceUID or "")
        status, comment, attributes = self._sink.update(uid, event.modification_list)
        if status != Status.SUCCESS:
            log.warning("mpps n-set refused", status=f"0x{status:04X}", reason=comment)
            return _status(status, comment), None
        return _status(0x0000, ""), attributes

    def _on_n_action(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        request = event.request
        assert isinstance(request, N_ACTION)
        if request.ActionTypeID != 1:
            return _status(_NO_SUCH_ACTION, "only Request Storage Commitment (1)"), None
        info = event.action_information
        transaction = str(info.get("TransactionUID", "") or "")
        references = [
            (
                str(item.get("ReferencedSOPClassUID", "")),
                str(item.get("ReferencedSOPInstanceUID", "")),
            )
            for item in info.get("ReferencedSOPSequence") or []
        ]
        if not transaction or not references or not all(uid for _c, uid in references):
            return _status(
                _INVALID_ARGUMENT, "TransactionUID and ReferencedSOPSequence needed"
            ), None
        association = event.assoc
        response_sent = self._same_association.expect_response(association)
        threading.Thread(
            target=self._report,
            args=(association, transaction, references, response_sent),
            name="commitment-report",
            daemon=True,
        ).start()
        return _status(0x0000, ""), None

    def _report(
        self,
        association: Association,
        transaction: str,
        references: list[Pair],
        response_sent: threading.Event,
    ) -> None:
        """Work out the commitment result and deliver it once the N-ACTION response is out."""
        calling_ae = association.requestor.ae_title
        committed, failed = self._sink.commitment(references)
        report = _event_information(transaction, committed, failed)
        event_type = 2 if failed else 1
        log.info(
            "storage commitment",
            calling_ae=calling_ae,
            transaction_uid=transaction,
            committed=len(committed),
            failed=len(failed),
        )
        if self._same_association.send(association, report, event_type, response_sent):
            return
        for attempt in range(_REPORT_ATTEMPTS):
            if self._send_on_new_association(calling_ae, report, event_type):
                return
            time.sleep(2**attempt)
        log.error(
            "storage commitment result not delivered; the requestor may ask again",
            calling_ae=calling_ae,
            transaction_uid=transaction,
        )

    def _send_on_new_association(self, calling_ae: str, report: Dataset, event_type: int) -> bool:
        address = self._settings.remote_aes.get(calling_ae.strip())
        if address is None:
            log.error(
                "no dicom.remote_aes address for a commitment requestor", calling_ae=calling_ae
            )
            return False
        host, _, port = address.rpartition(":")
        ae = AE(ae_title=self._settings.ae_title)
        ae.add_requested_context(STORAGE_COMMITMENT, UNCOMPRESSED)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        # We request the association but act as the SOP class's SCP: negotiate that role.
        role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
        # A site that requires TLS inbound gets it outbound too: verified against
        # dicom.tls.ca_file, presenting our certificate.
        tls = client_tls_context(self._settings.tls) if self._settings.tls.cert_file else None
        association = ae.associate(
            host,
            int(port),
            ae_title=calling_ae.strip(),
            ext_neg=[role],
            tls_args=(tls, host) if tls is not None else None,
        )
        if not association.is_established:
            log.warning(
                "commitment requestor did not accept an association",
                calling_ae=calling_ae,
                tls=tls is not None,
            )
            return False
        try:
            return send_report(association, report, event_type)
        finally:
            if association.is_established:
                association.release()


def _event_information(transaction: str, committed: list[Pair], failed: list[Pair]) -> Dataset:
    """N-EVENT-REPORT event information (PS3.4 J.3.3.1.1.2)."""
    report = Dataset()
    report.TransactionUID = transaction
    if committed:
        report.ReferencedSOPSequence = [_reference(pair) for pair in committed]
    if failed:
        report.FailedSOPSequence = [
            _reference(pair, failure=_NO_SUCH_OBJECT_INSTANCE) for pair in failed
        ]
    return report


def _reference(pair: Pair, failure: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = pair
    if failure is not None:
        item.FailureReason = failure
    return item
