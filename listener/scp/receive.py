"""Receiving DIMSE messages on an accepted association: bounded, streamed, refused early.

pynetdicom's DIMSE provider assembles each message from P-DATA without limits: a C-STORE dataset
goes to a temporary file whose write errors escape into its state machine (the association dies
without a response, the file stays), any other dataset is buffered whole in memory, the PDVs after
the first complete message of a PDU are dropped, and the file of a message that never completes
stays on disk. :class:`Receiver` replaces that provider on every association we accept
(:func:`install`, before the association's threads start):

- a C-STORE dataset streams into a :class:`~listener.scp.spool.SpoolFile` (size limit, disk
  reserve, write errors), after checks that the File Meta we write can describe it: its data set
  must come on its command's presentation context, its SOP class must be the context's abstract
  syntax, and an explicit-VR context must carry an explicit-VR body;
- any other dataset is held in memory up to ``max_other_dataset_bytes``;
- a refused message's remaining PDVs are read and dropped, then the association's own thread
  answers it with the refusal's status, in order (``_serve_request`` is wrapped);
- a message in progress must keep arriving at a minimum rate (:meth:`Receiver.stalled`, polled by
  the server's :class:`~listener.scp.watchdog.Watchdog`, which then :meth:`Receiver.cut` s the
  connection);
- a protocol violation (unknown command, oversized command set, data before its command) aborts
  the association at once (A-P-ABORT), as pynetdicom does for a PDU it cannot decode;
- when the association ends, whatever was not served is removed (``kill`` is wrapped).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _MESSAGE_TYPES
from pynetdicom.dimse_primitives import C_CANCEL, DimsePrimitiveType, DimseServiceType
from pynetdicom.pdu_primitives import P_DATA

from listener.logs import get_logger
from listener.scp.incoming import (
    Incoming,
    ProtocolError,
    ReceiveLimits,
    Refusal,
    Spooled,
    response_to,
)
from listener.scp.response import send_plain_response
from listener.scp.spool_pool import SpoolPool

log = get_logger("listener.scp")
_Handler = TypeVar("_Handler", bound=Callable[..., Any])

RefusalHandler = Callable[[Association, DimseServiceType, Refusal], None]
# pynetdicom ends an association by waiting for its DUL thread, which may be blocked reading a
# PDU that a peer trickles (its idle timeout fired mid-PDU): after this long, hang up on it.
_ENDING_GRACE = 2.0
# EVT_DIMSE_RECV handlers that never read ``event.message`` (see Receiver._primitive).
_MESSAGE_AGNOSTIC: set[Callable[..., Any]] = set()


def message_agnostic(handler: _Handler) -> _Handler:
    """Mark an EVT_DIMSE_RECV handler that reads only the event's association, not its message.

    While every handler bound is such, a plain C-STORE-RQ is delivered without the pynetdicom
    message object (its ``event.message`` is None).
    """
    _MESSAGE_AGNOSTIC.add(handler)
    return handler


# A-ABORT PDU, source 2 (service provider), reason 0 (not specified): PS3.8 9.3.8.
_A_P_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"


class Receiver(DIMSEServiceProvider):
    """The DIMSE provider of one accepted association (``receive_primitive`` runs on its DUL)."""

    def __init__(
        self,
        assoc: Association,
        limits: ReceiveLimits,
        on_refused: RefusalHandler,
        pool: SpoolPool | None = None,
    ) -> None:
        super().__init__(assoc)
        self._limits = limits
        self._pool = pool
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._current: Incoming | None = None
        self._closed = False
        self._ending_since: float | None = None
        self._refusals: dict[int, Refusal] = {}
        self._spooled: dict[int, Spooled] = {}  # delivered C-STORE files, until served
        self._arrived = threading.Event()  # a message was queued for the association thread

    # -- the DUL thread ------------------------------------------------------------------------

    def receive_primitive(self, primitive: P_DATA) -> None:
        """Take every PDV of a P-DATA; deliver each message it completes. Never raises."""
        try:
            for context_id, data in primitive.presentation_data_value_list:
                with self._lock:
                    if self._closed:
                        return
                    complete = self._take(context_id, data)
                if complete is not None:
                    try:
                        self._deliver(complete)
                    finally:
                        # This thread waits for the response now: it syncs the file while the
                        # handler reads it (a pool thread first had to win the GIL from it).
                        complete.sync_spool()
        except ProtocolError as exc:
            self._abort(str(exc))
        except Exception as exc:  # an escape here would kill the DUL silently
            log.exception("receiving a DIMSE message failed", **self._who())
            self._abort(f"internal error: {exc}")

    def _take(self, context_id: int, data: bytes | memoryview) -> Incoming | None:
        if not data:
            raise ProtocolError("empty presentation data value")
        message = self._current
        if message is None:
            message = self._current = Incoming(self._limits, time.monotonic(), self._pool)
        complete = message.take(self.assoc, context_id, data[0], data[1:])
        if complete:
            self._current = None
            return message
        return None

    def _deliver(self, message: Incoming) -> None:
        spooled = message.spooled()
        path = None if spooled is None else spooled.path
        try:
            primitive = self._primitive(message, path)
        except Exception as exc:  # pynetdicom's own check of the command set
            message.discard()
            raise ProtocolError(f"invalid DIMSE message: {exc}") from exc
        with self._lock:
            if self._closed:
                message.discard()
                return
            if message.refusal is not None:
                self._refusals[id(primitive)] = message.refusal
            if spooled is not None:
                self._spooled[id(primitive)] = spooled
        if isinstance(primitive, C_CANCEL) and len(self.cancel_req) < 10:
            self.cancel_req[int(primitive.MessageIDBeingRespondedTo or 0)] = primitive
        else:
            self.msg_queue.put((int(message.context_id or 0), cast(DimseServiceType, primitive)))
            self._arrived.set()

    def _primitive(self, message: Incoming, path: Path | None) -> DimsePrimitiveType:
        """The request primitive, EVT_DIMSE_RECV triggered; read directly when it can be.

        A plain C-STORE-RQ (``store_request``) skips pynetdicom's message object unless a handler
        of EVT_DIMSE_RECV may read it (every handler the listener binds is message-agnostic).
        """
        bound = self.assoc.get_handlers(evt.EVT_DIMSE_RECV)  # a notification event: a list
        handlers = cast(list[tuple[Callable[..., Any], Any]], bound)
        store = message.store
        if store is not None and all(func in _MESSAGE_AGNOSTIC for func, _args in handlers):
            evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": None})
            data_set = BytesIO(message.buffer)
            return store.primitive(int(message.context_id or 0), data_set, path)
        dimse_message = _MESSAGE_TYPES[message.command_field][1]()
        dimse_message.command_set = message.command_set()
        dimse_message.context_id = message.context_id
        dimse_message.data_set = BytesIO(message.buffer)
        dimse_message._data_set_path = path
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": dimse_message})
        return dimse_message.message_to_primitive()

    def _abort(self, reason: str) -> None:
        """A-P-ABORT now (from the DUL thread), dropping the message in progress."""
        with self._lock:
            self._closed = True
            partial = self._discard_current()
        log.warning("association aborted", reason=reason, partial_bytes=partial, **self._who())
        self.dul.event_queue.put("Evt19")  # invalid PDU: the state machine sends the A-ABORT

    # -- the association thread ----------------------------------------------------------------

    def wait_for_message(self, timeout: float) -> None:
        """Return once a message is queued for serving, or after ``timeout`` (wakeup.py)."""
        self._arrived.clear()
        if self.msg_queue.empty():
            self._arrived.wait(timeout)

    def serve(
        self, original: Callable[[DimseServiceType, int], None], msg: Any, context_id: int
    ) -> None:
        """Serve a request (refused ones with their status); then remove its spool file."""
        with self._lock:
            refusal = self._refusals.pop(id(msg), None)
        try:
            if refusal is None or context_id not in self.assoc._accepted_cx:
                original(msg, context_id)
            else:
                self._answer(msg, context_id, refusal)
        finally:
            with self._lock:
                spooled = self._spooled.pop(id(msg), None)
            if spooled is not None:
                spooled.path.unlink(missing_ok=True)

    def spooled_of(self, request: Any) -> Spooled | None:
        """A request's spool file, its content digest and its data sync (None if none)."""
        with self._lock:
            return self._spooled.get(id(request))

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message; a plain C-STORE response skips pydicom (``response.py``)."""
        if not send_plain_response(self, primitive, context_id):
            super().send_msg(primitive, context_id)

    def _answer(self, msg: Any, context_id: int, refusal: Refusal) -> None:
        try:
            self.send_msg(response_to(msg, refusal), context_id)
            self._on_refused(self.assoc, msg, refusal)
        except Exception:  # an escape would end the association thread uncleanly
            log.exception("answering a refused message failed", **self._who())
            self.assoc.abort()

    def close(self) -> None:
        """The association ended: remove every file of a message not complete or not served."""
        with self._lock:
            self._closed = True
            partial = self._discard_current()
            spooled, self._spooled = list(self._spooled.values()), {}
        for done in spooled:
            done.path.unlink(missing_ok=True)
        if partial is not None:
            log.warning(
                "association ended mid-message; its partial data removed",
                received_bytes=partial,
                **self._who(),
            )

    # -- the watchdog --------------------------------------------------------------------------

    def stalled(self, now: float) -> str | None:
        """Why the message in progress is too slow (None while it keeps the minimum rate)."""
        with self._lock:
            message = self._current
            if self._closed:
                return None
            if self._ending_since is not None:
                if now - self._ending_since < _ENDING_GRACE:
                    return None
                return "the association is ending but its connection is still being read"
            return message.progress.stalled(now) if message is not None else None

    def ending(self) -> None:
        """The association is being ended (pynetdicom now waits for its DUL thread to stop)."""
        with self._lock:
            if self._ending_since is None:
                self._ending_since = time.monotonic()

    def cut(self, reason: str) -> None:
        """Drop the message in progress and hang up (from a thread other than the DUL's)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            partial = self._discard_current()
        log.warning(
            "slow association cut",
            reason=reason,
            partial_bytes=partial,
            **self._who(),
        )
        _hang_up(getattr(self.dul.socket, "socket", None))

    def _discard_current(self) -> int | None:
        """Drop the message in progress (under the lock); how many bytes it had, if any."""
        message, self._current = self._current, None
        if message is None:
            return None
        message.discard()
        return message.received

    def _who(self) -> dict[str, str]:
        requestor = self.assoc.requestor
        return {
            "calling_ae": str(requestor.ae_title),
            "peer": f"{requestor.address}:{requestor.port}",
        }


def install(
    assoc: Association,
    limits: ReceiveLimits,
    on_refused: RefusalHandler,
    pool: SpoolPool | None = None,
) -> Receiver:
    """Make a new association receive through a :class:`Receiver` (before its threads start).

    ``pool``: ready spool files; a complete one is fsynced on the reading thread, beside the
    handler.
    """
    receiver = Receiver(assoc, limits, on_refused, pool)
    assoc.dimse = receiver
    original_serve, original_kill = assoc._serve_request, assoc.kill

    def serve_request(msg: DimseServiceType, context_id: int) -> None:
        receiver.serve(original_serve, msg, context_id)

    def kill() -> None:
        receiver.ending()
        try:
            original_kill()
        finally:
            receiver.close()

    setattr(assoc, "_serve_request", serve_request)  # noqa: B010 - per association, by design
    setattr(assoc, "kill", kill)  # noqa: B010
    return receiver


def _hang_up(connection: socket.socket | None) -> None:
    """Send an A-ABORT if it fits without waiting, then shut the connection down both ways.

    The DUL thread may be blocked reading a PDU; the shutdown ends that read, so pynetdicom sees
    the connection close and ends the association (A-P-ABORT indication).
    """
    if connection is None:
        return
    if not isinstance(connection, ssl.SSLSocket):
        with contextlib.suppress(OSError):
            connection.send(_A_P_ABORT, socket.MSG_DONTWAIT)
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop the TLS
        # state the DUL thread may be reading with.
        socket.socket.shutdown(connection, socket.SHUT_RDWR)
