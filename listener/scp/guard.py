"""The door of the DICOM port: TLS, slow or silent peers, garbage, per-AE address rules.

pynetdicom's server wraps TLS and waits for the association request in ways a hostile or broken
peer can exploit: the TLS handshake runs in the accept loop (one stalled client blocks every new
connection) and a connection holds an association slot from its first byte until the ACSE timeout.
:class:`GuardedServer` accepts plain sockets and hands each to a short-lived thread that does the
TLS handshake and reads and vets the whole A-ASSOCIATE-RQ, with a deadline and caps on how many
may wait at once, in all and per source address. Only then does pynetdicom see the connection
(and take an association slot), if the source address is under its association cap.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom.transport import ThreadedAssociationServer

from listener.config import DicomTlsSettings
from listener.scp.admission import (
    AddressCounts,
    GuardedRequestHandler,
    GuardLimits,
    send_rejection,
)
from listener.scp.association_request import (
    A_ASSOCIATE_RQ_TYPE,
    MAX_REQUEST_BYTES,
    Rejection,
    RequestProblem,
    VettedRequests,
    read_request,
    too_many_from_address,
)

# BCP 195 for TLS 1.2: forward secrecy and AEAD ciphers only (TLS 1.3 suites are all fine).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!DSS"

Refusal = Callable[[str, str], None]
# Largest PDUs other than P-DATA we accept: an A-ASSOCIATE-RQ with hundreds of presentation
# contexts stays far below 1 MiB; release and abort PDUs are 4 bytes long.
_OTHER_LIMIT = 1 << 16
# A worker sharing the port waits this long per association it serves before it accepts.
ACCEPT_DEFERRAL = 0.010
_MAX_DEFERRALS = 3
_P_DATA_TF = 0x04
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class _PduLimits:
    """Counts PDU boundaries in the received byte stream and fails a PDU longer than allowed.

    pynetdicom reads a PDU's declared length and then keeps reading until it has that much, so a
    peer announcing 4 GB would make it buffer 4 GB. Raising OSError from ``recv`` makes pynetdicom
    treat the connection as closed and abort the association.
    """

    max_p_data = 0  # 0: no limit
    _header = b""
    _remaining = 0
    _replay = b""  # bytes the guard already read, given to pynetdicom before the wire's

    @property
    def replaying(self) -> bool:
        """True while bytes read by the guard wait to be read again."""
        return bool(self._replay)

    def replay(self, data: bytes) -> None:
        """Make the next reads return ``data`` first (the A-ASSOCIATE-RQ the guard vetted)."""
        self._replay = data

    def read_raw(self, size: int) -> bytes:
        """``recv`` without PDU counting or replay: the guard reading the request itself."""
        data: bytes = super().recv(size)  # type: ignore[misc]  # the socket's recv
        return data

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        """``socket.recv``, counting PDU boundaries (not for MSG_PEEK reads).

        Each read also re-arms TCP_QUICKACK (Linux resets it): a sender that leaves Nagle's
        algorithm on (DCMTK's default) holds back the last segment of every message until its
        previous segment is acknowledged, and a delayed ACK would make that ~40 ms per C-STORE.
        """
        flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
        if self._replay and not flags & socket.MSG_PEEK:
            size = args[0] if args else kwargs.get("bufsize", len(self._replay))
            data, self._replay = self._replay[:size], self._replay[size:]
        else:
            data = super().recv(*args, **kwargs)  # type: ignore[misc]  # the socket's recv
        if not flags & socket.MSG_PEEK:
            self._after_read(data)
        return data

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        """``socket.recv_into``, counting PDU boundaries and re-arming TCP_QUICKACK as ``recv``.

        Only for reads past the replayed request (``listener.scp.pdata`` reads P-DATA with it).
        """
        if self._replay:
            raise OSError(errno.EINVAL, "recv_into while request bytes wait to be replayed")
        receive = super().recv_into  # type: ignore[misc]  # the socket's recv_into
        count: int = (
            receive(buffer, flags=flags) if nbytes is None else receive(buffer, nbytes, flags)
        )
        if not flags & socket.MSG_PEEK:
            self._after_read(memoryview(buffer)[:count])
        return count

    def _after_read(self, data: bytes | memoryview) -> None:
        """Count the PDU boundaries in ``data`` and re-arm TCP_QUICKACK (see :meth:`recv`)."""
        self._track(data)
        if _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[attr-defined]

    def _track(self, data: bytes | memoryview) -> None:
        offset = 0
        while offset < len(data):
            if self._remaining:
                taken = min(self._remaining, len(data) - offset)
                self._remaining -= taken
                offset += taken
                continue
            needed = 6 - len(self._header)
            self._header += bytes(data[offset : offset + needed])
            offset += needed
            if len(self._header) == 6:
                pdu_type, _, length = struct.unpack(">BBL", self._header)
                self._header = b""
                self._check(pdu_type, length)
                self._remaining = length

    def _check(self, pdu_type: int, length: int) -> None:
        if pdu_type == _P_DATA_TF:
            limit = self.max_p_data or length
        else:
            limit = MAX_REQUEST_BYTES if pdu_type == A_ASSOCIATE_RQ_TYPE else _OTHER_LIMIT
        if length > limit:
            raise OSError(errno.EMSGSIZE, f"PDU type 0x{pdu_type:02X} of {length} bytes refused")


class Wakeable:
    """A connection whose reader can wait for incoming data or a wake-up, whichever comes first.

    The wake-up channel is a socket pair owned by the connection and closed with it
    (:mod:`listener.scp.wakeup` explains why pynetdicom's DUL thread needs it).
    """

    _wake_pair: tuple[socket.socket, socket.socket] | None = None

    def enable_wakeups(self) -> None:
        """Create the wake-up channel (before the connection is handed to pynetdicom)."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wake_pair = (reader, writer)

    def wake(self) -> None:
        """Make a current or the next :meth:`wait_for_work` return at once."""
        pair = self._wake_pair
        if pair is not None:
            with contextlib.suppress(OSError):  # closed meanwhile, or already full of wake-ups
                pair[1].send(b"\0")

    def wait_for_work(self, timeout: float) -> None:
        """Return when data can be read, :meth:`wake` was called, or ``timeout`` passed."""
        pair = self._wake_pair
        if pair is None:
            time.sleep(timeout)
            return
        if getattr(self, "replaying", False) or (
            isinstance(self, ssl.SSLSocket) and self.pending()
        ):
            return  # data already buffered (replayed or decrypted): select would not see it
        try:
            readable = select.select([cast(socket.socket, self), pair[0]], [], [], timeout)[0]
        except (OSError, ValueError):  # closed meanwhile: let the caller find out
            time.sleep(timeout)
            return
        if pair[0] in readable:
            with contextlib.suppress(OSError):
                pair[0].recv(4096)

    def close(self) -> None:
        """Close the connection and its wake-up channel."""
        pair, self._wake_pair = self._wake_pair, None
        for end in pair or ():
            end.close()
        super().close()  # type: ignore[misc]  # the socket's close


class GuardedSocket(Wakeable, _PduLimits, socket.socket):
    """A plain TCP connection with PDU length limits."""


class GuardedSSLSocket(Wakeable, _PduLimits, ssl.SSLSocket):
    """A TLS connection with PDU length limits."""


def server_tls_context(tls: DicomTlsSettings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2+), requiring client certificates when ca_file is set."""
    if not tls.cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls.ca_file)
    context.sslsocket_class = GuardedSSLSocket
    return context


def client_tls_context(tls: DicomTlsSettings) -> ssl.SSLContext:
    """A client context for a TLS listener (our own ``echo``).

    It verifies the server with ca_file and presents cert_file/key_file as client certificate.
    """
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # DICOM peers are identified by certificate, not host name
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class SharedContexts(list[Any]):
    """The server's supported presentation contexts, shared by its associations, not copied.

    pynetdicom deep-copies the server's contexts for every association it accepts: with every
    storage SOP class and transfer syntax we take (about 13,000 syntax entries) that cost some
    50 ms per association before the A-ASSOCIATE-AC could go out. Negotiation only reads them,
    and per-association additions (``negotiation.py``) build a new list.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with every connection vetted before an association starts.

    pynetdicom builds the instance (``backlog``: the listen queue, sized for bursts of
    connections; ``reuse_port``: SO_REUSEPORT); configure it with :meth:`guard` right after
    construction.
    """

    daemon_threads = True
    _tls: ssl.SSLContext | None = None
    _deadline = 15.0
    _associations_per_address = 0
    _refuse: Refusal = staticmethod(lambda reason, peer: None)
    _tick: Callable[[], None] = staticmethod(lambda: None)
    idle_timeouts: tuple[float, float] = (0.0, 0.0)  # (before the first DIMSE message, after)
    _idle_timeout: float | None = None
    _max_p_data = 0

    def __init__(
        self,
        *args: Any,
        backlog: int = 5,
        listening: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        self.request_queue_size = backlog  # read by listen() during construction
        self._listening = listening  # read by server_bind() during construction
        self._handoff_lock = threading.Lock()
        self._max_pending = 64
        self._pending_by_address = AddressCounts(0)
        self._vetting = 0  # connections accepted and not yet handed off or refused
        self._vetting_lock = threading.Lock()
        kwargs.setdefault("request_handler", GuardedRequestHandler)
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)
        self._vetted = VettedRequests(self.contexts)

    def guard(
        self, *, tls: ssl.SSLContext | None, limits: GuardLimits, on_refused: Refusal
    ) -> None:
        """Set TLS, the deadlines and the caps; ``on_refused`` hears of every refused peer."""
        self._tls = tls
        self._deadline = limits.request_timeout
        self._idle_timeout = limits.idle_timeout
        self.idle_timeouts = (limits.idle_timeout_before_dimse, limits.idle_timeout)
        self._max_pending = limits.max_pending
        self._pending_by_address = AddressCounts(limits.max_pending_per_address)
        self._associations_per_address = limits.max_associations_per_address
        self._max_p_data = limits.max_pdu_size
        self._refuse = on_refused
        self._tick = limits.on_tick

    def server_bind(self) -> None:
        """Bind as pynetdicom does, or take over ``listening``: the socket sibling workers share.

        A shared socket is non-blocking: when a sibling accepted the connection that woke this
        server too, accept() fails with BlockingIOError, which the accept loop skips.
        """
        if self._listening is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = self._listening
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen, unless the shared socket listens already."""
        if self._listening is None:
            super().server_activate()

    def service_actions(self) -> None:
        """Called by the accept loop about twice a second: lets the owner do periodic work."""
        self._tick()

    def shutdown(self) -> None:
        """Stop serving and close the socket (the AE never listed this server as its own)."""
        with contextlib.suppress(ValueError):
            super().shutdown()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept without TLS: the handshake happens in the connection's own thread.

        On a socket shared with sibling workers, a worker already serving associations first
        gives the others a moment (``ACCEPT_DEFERRAL`` per connection it has, at most 3): every
        worker is woken by each new connection, and without this the one that happened to be
        awake took several of a burst, leaving its sibling idle (4 associations split 3 to 1 in
        half of the benchmark's sends). A sibling that took the connection meanwhile makes this
        accept fail with BlockingIOError, which the accept loop skips.
        """
        assert self.socket is not None
        if self._listening is not None:
            busy = min(len(self.active_associations) + self._vetting, _MAX_DEFERRALS)
            if busy:
                time.sleep(busy * ACCEPT_DEFERRAL)
        client, address = self.socket.accept()
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a vetting thread, unless too many connections (from this address) wait already."""
        if not self._start_vetting():
            self._close(request, "too many pending connections", client_address)
            return
        if not self._pending_by_address.enter(_host(client_address)):
            self._stop_vetting()
            self._close(request, "too many pending connections from this address", client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done_pending(client_address)
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Vet the connection; hand it to pynetdicom only if its request is whole and sound."""
        try:
            sock, problem = self._vet(request)
            if problem is None:
                problem = self._hand_off(sock, client_address)
            if isinstance(problem, Rejection):
                send_rejection(sock, problem)
            if problem is not None:
                self._close(sock, problem, client_address)
        finally:
            self._done_pending(client_address)

    def _done_pending(self, client_address: Any) -> None:
        self._pending_by_address.leave(_host(client_address))
        self._stop_vetting()

    def _start_vetting(self) -> bool:
        """Count one more connection being vetted; False (not counted) at ``max_pending``."""
        with self._vetting_lock:
            if self._vetting >= self._max_pending:
                return False
            self._vetting += 1
            return True

    def _stop_vetting(self) -> None:
        with self._vetting_lock:
            self._vetting -= 1

    def _vet(self, sock: socket.socket) -> tuple[socket.socket, str | Rejection | None]:
        """The socket to use (TLS-wrapped if TLS is on) and why it was refused, if it was."""
        deadline = time.monotonic() + self._deadline
        sock.settimeout(self._deadline)
        try:
            if self._tls is None:
                sock = GuardedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            else:
                sock = self._tls.wrap_socket(sock, server_side=True)
            assert isinstance(sock, _PduLimits)
            request = read_request(sock.read_raw, sock.settimeout, deadline)
        except RequestProblem as exc:
            return sock, str(exc)
        except TimeoutError:
            return sock, "silent"
        except ssl.SSLError as exc:
            return sock, f"TLS handshake failed: {exc.reason}"
        except OSError:
            return sock, "connection error before associating"
        rejection = self._vetted.vet(request)
        if rejection is None:
            sock.replay(request)
        return sock, rejection

    def _hand_off(self, sock: socket.socket, client_address: Any) -> Rejection | None:
        """Start pynetdicom's association, unless this address has its share of them already."""
        assert isinstance(sock, _PduLimits) and isinstance(sock, Wakeable)
        sock.max_p_data = self._max_p_data
        sock.enable_wakeups()
        # Responses are small and awaited: never hold them back for Nagle's algorithm.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom reads a PDU with blocking recv calls: without a timeout, a peer that
        # stops mid-PDU would hold its thread and socket forever.
        sock.settimeout(self._idle_timeout)
        limit, host = self._associations_per_address, _host(client_address)
        # Counting and starting under one lock: two requests from one address cannot both
        # count the same free place.
        with self._handoff_lock:
            if limit and self._associations_from(host) >= limit:
                return too_many_from_address(limit)
            super().finish_request(sock, client_address)
        return None

    def _associations_from(self, host: str) -> int:
        return sum(1 for assoc in self.active_associations if assoc.requestor.address == host)

    def _close(self, sock: socket.socket, reason: str | Rejection, address: Any) -> None:
        self._refuse(reason.why if isinstance(reason, Rejection) else reason, _peer(address))
        with contextlib.suppress(OSError):
            sock.close()


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
