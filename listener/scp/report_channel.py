"""Storage Commitment reports sent back on the requesting association (PS3.4 J.3.3.1.2).

The report (N-EVENT-REPORT) is sent from its own thread with pynetdicom's ``send_n_event_report``,
which pauses the association until the reply arrives. :class:`ReportChannel` removes the hazards
of doing that on an association the requestor is using:

- **Order.** pynetdicom marks the association paused while a handler runs (so a handler may call
  ``send_*`` itself), so a report could overtake the N-ACTION response that pynetdicom sends after
  the handler returns; the requestor would read the report's command set merged with the
  response's. A report waits until the association has sent a PDU after the handler.
- **Release.** Requestors often release right after the N-ACTION response. A report then waiting
  for its reply would hold the release until the reply timeout, after which pynetdicom aborts the
  association. A release request ends the wait at once with a local failure (pynetdicom does the
  same on an abort, fsm AA-2/3/4), so the release completes normally and the report goes on a new
  association; no report is started once a release request has arrived.
- **Requests.** A requestor may go on (e.g. with a C-STORE) before it answers the report; the
  waiting report would take that request for its reply and the request would never be answered.
  A request arriving while a report waits ends the wait the same way, before the request is
  queued, so the association serves it; the report goes on a new association.
- **One at a time** per association.

Its handlers are bound only to associations that asked for a commitment, so plain storage
associations pay nothing for them (each triggered event costs pynetdicom ~20 µs).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.pdu import A_RELEASE_RQ, P_DATA_TF

from listener.dicom_codes import (
    PROCESSING_FAILURE,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
)
from listener.logs import get_logger

log = get_logger("listener.scp.dimse_n")

STORAGE_COMMITMENT = STORAGE_COMMITMENT_PUSH
STORAGE_COMMITMENT_INSTANCE = STORAGE_COMMITMENT_PUSH_INSTANCE
# The reply a withdrawn report gets locally; never sent to anyone.
_WITHDRAWN = PROCESSING_FAILURE
# How long a report waits for the N-ACTION response to leave, then for the requestor's reply.
_RESPONSE_SENT_TIMEOUT = 10.0
_REPLY_TIMEOUT = 5.0


@dataclass
class _Channel:
    """What one association's reports share."""

    sending: threading.Lock = field(default_factory=threading.Lock)
    awaiting_response: list[threading.Event] = field(default_factory=list)
    release_requested: bool = False
    message_id: int = 0


class ReportChannel:
    """Sends commitment reports on requesting associations; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: weakref.WeakKeyDictionary[Association, _Channel] = (
            weakref.WeakKeyDictionary()
        )

    def expect_response(self, association: Association) -> threading.Event:
        """Call from the N-ACTION handler: the returned event is set once its response is sent.

        The handler runs on the association's thread and nothing else sends until the response,
        so the next P-DATA PDU this association sends is the response.
        """
        response_sent = threading.Event()
        with self._lock:
            channel = self._channels.get(association)
            if channel is None:
                channel = self._channels[association] = _Channel()
                association.bind(evt.EVT_PDU_SENT, self._on_pdu_sent)
                association.bind(evt.EVT_PDU_RECV, self._on_pdu_received)
                association.bind(evt.EVT_DIMSE_RECV, self._on_dimse_received)
            channel.awaiting_response.append(response_sent)
        return response_sent

    def send(
        self,
        association: Association,
        report: Dataset,
        event_type: int,
        response_sent: threading.Event,
    ) -> bool:
        """Send the report once the N-ACTION response is out; True when the requestor took it."""
        with self._lock:
            channel = self._channels[association]
        if not response_sent.wait(_RESPONSE_SENT_TIMEOUT):
            with self._lock:  # the response never left (the association ended)
                if response_sent in channel.awaiting_response:
                    channel.awaiting_response.remove(response_sent)
            return False
        with channel.sending:
            with self._lock:
                if channel.release_requested or not association.is_established:
                    return False
                channel.message_id = channel.message_id % 0xFFFF + 1
                message_id = channel.message_id
            return send_report(
                association, report, event_type, message_id=message_id, timeout=_REPLY_TIMEOUT
            )

    def _on_pdu_sent(self, event: evt.Event) -> None:
        """Release reports waiting for this association's N-ACTION response to be sent."""
        if not isinstance(event.pdu, P_DATA_TF):
            return
        with self._lock:
            channel = self._channels.get(event.assoc)
            waiting = channel.awaiting_response if channel is not None else []
            if channel is not None:
                channel.awaiting_response = []
        for response_sent in waiting:
            response_sent.set()

    def _on_pdu_received(self, event: evt.Event) -> None:
        """A release request withdraws a report waiting for its reply, and any later one."""
        if not isinstance(event.pdu, A_RELEASE_RQ):
            return
        with self._lock:
            channel = self._channels.get(event.assoc)
            if channel is not None:
                channel.release_requested = True
                self._withdraw(event.assoc, channel)

    def _on_dimse_received(self, event: evt.Event) -> None:
        """A request from the requestor withdraws a report waiting for its reply."""
        command = int(event.message.command_set.get("CommandField", 0x8000) or 0x8000)
        if command & 0x8000:  # a reply, e.g. the report's
            return
        with self._lock:
            channel = self._channels.get(event.assoc)
            if channel is not None:
                self._withdraw(event.assoc, channel)

    @staticmethod
    def _withdraw(association: Association, channel: _Channel) -> None:
        """End the wait of a report on ``association`` with a local failure; call under the lock.

        Called on the association's DUL thread before pynetdicom queues what arrived, so the
        waiting report takes this reply, never the requestor's message.
        """
        if channel.sending.locked():
            withdrawn = N_EVENT_REPORT()
            withdrawn.MessageIDBeingRespondedTo = channel.message_id
            withdrawn.Status = _WITHDRAWN
            # A reply without a context: what pynetdicom's queue holds is typed narrower.
            association.dimse.msg_queue.put((None, withdrawn))  # type: ignore[arg-type]


def send_report(
    association: Association,
    report: Dataset,
    event_type: int,
    *,
    message_id: int = 1,
    timeout: float | None = None,
) -> bool:
    """Send the N-EVENT-REPORT (waiting ``timeout`` for the reply); True when it is success."""
    if not association.is_established:
        return False
    previous = association.dimse_timeout
    if timeout is not None:
        association.dimse_timeout = timeout
    try:
        status, _reply = association.send_n_event_report(
            report,
            event_type,
            STORAGE_COMMITMENT,
            STORAGE_COMMITMENT_INSTANCE,
            msg_id=message_id,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        log.info("commitment result cannot go on this association", reason=str(exc))
        return False
    finally:
        association.dimse_timeout = previous
    return bool(status) and int(status.get("Status", 0xFFFF)) == 0x0000
