"""Letting a vetted connection in: limits, address rules, the A-ASSOCIATE-RJ, the hand-off.

:class:`listener.scp.guard.GuardedServer` reads a connection's whole A-ASSOCIATE-RQ before
pynetdicom sees it (:mod:`listener.scp.association_request`). This module holds what happens
around that: the guard's limits, the per-AE address rules, how many connections each source
address may have waiting, how a refused request is answered, and :class:`GuardedRequestHandler`,
which gives pynetdicom the connection with the request bytes replayed and a short idle limit
until the peer's first DIMSE message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler

from listener.scp import pdata
from listener.scp.association_request import Rejection
from listener.scp.receive import message_agnostic

# Longest wait for the A-ASSOCIATE-RJ to leave (the peer's receive window may be full).
_SEND_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Deadlines and caps of :class:`GuardedServer` (the ``dicom`` settings of the same names).

    ``request_timeout``: to send a whole association request (TLS handshake included);
    ``idle_timeout``: between reads afterwards, and the association idle limit once a DIMSE
    message came; ``idle_timeout_before_dimse``: the idle limit before that; ``max_pending``,
    ``max_pending_per_address``: connections being vetted at once; ``max_pdu_size``: longest
    P-DATA PDU; ``on_tick``: called about twice a second from the accept loop.
    """

    request_timeout: float
    idle_timeout: float
    idle_timeout_before_dimse: float
    max_pending: int
    max_pending_per_address: int
    max_associations_per_address: int
    max_pdu_size: int
    on_tick: Callable[[], None] = lambda: None


class PeerRules:
    """``AE@address`` / ``AE@network/prefix`` rules: a listed AE may connect only from those."""

    def __init__(self, rules: list[str]) -> None:
        self._networks: dict[str, list[Any]] = {}
        for rule in rules:
            title, _, address = rule.partition("@")
            network = ipaddress.ip_network(address, strict=False)
            self._networks.setdefault(title.strip(), []).append(network)

    def allows(self, calling_ae: str, address: str) -> bool:
        """True when ``calling_ae`` has no rules, or ``address`` is in one of its networks."""
        networks = self._networks.get(calling_ae.strip())
        if networks is None:
            return True
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in networks)


class AddressCounts:
    """Connections per source address, each admitted only while its address is under a cap."""

    def __init__(self, limit: int) -> None:
        self._limit = limit  # 0: no limit
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, address: str) -> bool:
        """Count one more connection from ``address``; False (and not counted) when at the cap."""
        with self._lock:
            count = self._counts.get(address, 0)
            if self._limit and count >= self._limit:
                return False
            self._counts[address] = count + 1
            return True

    def leave(self, address: str) -> None:
        """Count one connection from ``address`` less."""
        with self._lock:
            count = self._counts.pop(address, 0) - 1
            if count > 0:
                self._counts[address] = count


def send_rejection(sock: socket.socket, rejection: Rejection) -> None:
    """Send the A-ASSOCIATE-RJ, end our side, and read what the peer sent beyond its request.

    Closing with unread bytes from the peer would reset the connection, and a reset can destroy
    the rejection before the peer has read it. Nothing waits for the peer: one that keeps its end
    open must not keep a thread here.
    """
    with contextlib.suppress(OSError):
        sock.settimeout(_SEND_TIMEOUT)
        sock.sendall(rejection.pdu())
        if isinstance(sock, ssl.SSLSocket):
            return
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        read = getattr(sock, "read_raw", sock.recv)  # no PDU counting on what we throw away
        while read(65536):
            pass


class _ReplayAwareSocket(AssociationSocket):
    """pynetdicom's socket wrapper, also ready to read while request bytes wait to be replayed.

    It also reads a PDU in as few reads as the kernel allows: pynetdicom reads 4 KiB at a time,
    and each read of the guarded socket costs a poll, the read and a TCP_QUICKACK (about 130 of
    each for a 525 KB instance). And it lets the association's own thread send a C-STORE
    response at once (:meth:`send_now`), one send at a time with pynetdicom's.
    """

    send_lock: threading.Lock  # set by GuardedRequestHandler: no two PDUs interleave

    @property
    def ready(self) -> bool:
        """True when the connection has data: replayed request bytes or bytes on the wire."""
        if getattr(self.socket, "replaying", False):
            return True
        return bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """Up to ``nr_bytes`` (fewer only when the peer closed), as pynetdicom's ``recv``.

        pynetdicom asks for a PDU's header, then for exactly its length once the guard has
        checked that length: a read never goes past the PDU.
        """
        assert self.socket is not None
        bytestream = bytearray()
        while len(bytestream) < nr_bytes:
            data = self.socket.recv(nr_bytes - len(bytestream))
            if not data:
                break  # closed: what was read, as pynetdicom returns it
            bytestream += data
        return bytestream

    def send(self, bytestream: bytes) -> None:
        """Send as pynetdicom does (its DUL thread), never at the same time as :meth:`send_now`."""
        with self.send_lock:
            super().send(bytestream)

    def send_now(self, pdu: bytes, state: Callable[[], str]) -> bool:
        """Send a P-DATA-TF from the calling thread; False (nothing sent) when it may not.

        Only on a plain TCP connection (an SSL object must not write while another thread reads)
        and while ``state()`` is Sta6, association established: the state pynetdicom would send
        a P-DATA in. A failed send is what it is on pynetdicom's path: the connection closed
        (Evt17 for its state machine).
        """
        connection = self.socket
        if connection is None or isinstance(connection, ssl.SSLSocket):
            return False
        with self.send_lock:
            if not self._is_connected or state() != "Sta6":
                return False
            try:
                connection.sendall(pdu)
            except OSError:
                self.event_queue.put("Evt17")
        return True


@message_agnostic
def _first_message(event: evt.Event, idle_timeout: float) -> None:
    """The peer sent a DIMSE message: from now on the normal idle limit applies."""
    if event.assoc.network_timeout != idle_timeout:
        event.assoc.network_timeout = idle_timeout


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler for connections :class:`GuardedServer` has vetted."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        # pynetdicom creates its AssociationSocket inside this method; only the class of that
        # object is changed, to a subclass that knows about the replayed request bytes.
        connection = cast(_ReplayAwareSocket, association.dul.socket)
        connection.__class__ = _ReplayAwareSocket
        connection.send_lock = threading.Lock()
        pdata.install(association.dul)
        server: Any = self.server
        before, after = server.idle_timeouts
        if before and after and before < after:
            association.network_timeout = before
            association.bind(evt.EVT_DIMSE_RECV, _first_message, [after])
        return association
