"""The door of the DICOM port: TLS, slow or silent peers, garbage, per-AE address rules.

pynetdicom's server wraps TLS and waits for the association request in ways a hostile or broken
peer can exploit: the TLS handshake runs in the accept loop (one stalled client blocks every new
connection) and a connection that never speaks holds an association slot for the whole ACSE
timeout. :class:`GuardedServer` accepts plain sockets and hands each to a short-lived thread that
does the TLS handshake and waits for the first byte of an A-ASSOCIATE-RQ, with a deadline and a
cap on how many may wait at once. Only then does pynetdicom see the connection.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
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

A_ASSOCIATE_RQ = 0x01
# BCP 195 for TLS 1.2: forward secrecy and AEAD ciphers only (TLS 1.3 suites are all fine).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!DSS"

Refusal = Callable[[str, str], None]
# Largest PDUs other than P-DATA we accept: an A-ASSOCIATE-RQ with hundreds of presentation
# contexts stays far below 1 MiB; release and abort PDUs are 4 bytes long.
_ASSOCIATE_LIMIT, _OTHER_LIMIT = 1 << 20, 1 << 16
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

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        """``socket.recv``, counting PDU boundaries (not for MSG_PEEK reads).

        Each read also re-arms TCP_QUICKACK (Linux resets it): a sender that leaves Nagle's
        algorithm on (DCMTK's default) holds back the last segment of every message until its
        previous segment is acknowledged, and a delayed ACK would make that ~40 ms per C-STORE.
        """
        data: bytes = super().recv(*args, **kwargs)  # type: ignore[misc]  # the socket's recv
        flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
        if not flags & socket.MSG_PEEK:
            self._track(data)
            if _QUICKACK is not None:
                with contextlib.suppress(OSError):
                    self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[attr-defined]
        return data

    def _track(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            if self._remaining:
                taken = min(self._remaining, len(data) - offset)
                self._remaining -= taken
                offset += taken
                continue
            needed = 6 - len(self._header)
            self._header += data[offset : offset + needed]
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
            limit = _ASSOCIATE_LIMIT if pdu_type == A_ASSOCIATE_RQ else _OTHER_LIMIT
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
        if isinstance(self, ssl.SSLSocket) and self.pending():
            return  # decrypted data already buffered: select would not see it
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


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with every connection vetted before an association starts.

    Configure with :meth:`guard` right after construction (pynetdicom builds the instance).
    """

    daemon_threads = True
    _tls: ssl.SSLContext | None = None
    _deadline = 15.0
    _pending: threading.BoundedSemaphore = threading.BoundedSemaphore(64)
    _refuse: Refusal = staticmethod(lambda reason, peer: None)

    _idle_timeout: float | None = None
    _max_p_data = 0

    def guard(
        self,
        *,
        tls: ssl.SSLContext | None,
        first_bytes_timeout: float,
        idle_timeout: float,
        max_pending: int,
        max_pdu_size: int,
        on_refused: Refusal,
    ) -> None:
        """Set TLS, the deadlines and the caps.

        ``first_bytes_timeout``: to start talking; ``idle_timeout``: between reads afterwards;
        ``max_pending``: peers being vetted at once; ``max_pdu_size``: longest P-DATA PDU.
        """
        self._tls = tls
        self._deadline = first_bytes_timeout
        self._idle_timeout = idle_timeout
        self._pending = threading.BoundedSemaphore(max_pending)
        self._max_p_data = max_pdu_size
        self._refuse = on_refused

    def shutdown(self) -> None:
        """Stop serving and close the socket (the AE never listed this server as its own)."""
        with contextlib.suppress(ValueError):
            super().shutdown()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept without TLS: the handshake happens in the connection's own thread."""
        assert self.socket is not None
        client, address = self.socket.accept()
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a vetting thread, unless too many connections are already being vetted."""
        if not self._pending.acquire(blocking=False):
            self._close(request, "too many pending connections", client_address)
            return
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Vet the connection; hand it to pynetdicom only if it is ready to associate."""
        try:
            sock, problem = self._vet(request)
        finally:
            self._pending.release()
        if problem is None:
            assert isinstance(sock, _PduLimits) and isinstance(sock, Wakeable)
            sock.max_p_data = self._max_p_data
            sock.enable_wakeups()
            # Responses are small and awaited: never hold them back for Nagle's algorithm.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # pynetdicom reads a PDU with blocking recv calls: without a timeout, a peer that
            # stops mid-PDU would hold its thread and socket forever.
            sock.settimeout(self._idle_timeout)
            super().finish_request(sock, client_address)
            return
        self._close(sock, problem, client_address)

    def _vet(self, sock: socket.socket) -> tuple[socket.socket, str | None]:
        """The socket to use (TLS-wrapped if TLS is on) and why it was refused, if it was."""
        sock.settimeout(self._deadline)
        try:
            if self._tls is None:
                sock = GuardedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
                sock.settimeout(self._deadline)
                return sock, _first_byte_problem(sock.recv(1, socket.MSG_PEEK))
            tls_sock = self._tls.wrap_socket(sock, server_side=True)
            if tls_sock.pending() or select.select([tls_sock], [], [], self._deadline)[0]:
                return tls_sock, None
            return tls_sock, "silent after TLS handshake"
        except TimeoutError:
            return sock, "silent"
        except ssl.SSLError as exc:
            return sock, f"TLS handshake failed: {exc.reason}"
        except OSError:
            return sock, "connection error before associating"

    def _close(self, sock: socket.socket, reason: str, address: Any) -> None:
        self._refuse(reason, _peer(address))
        with contextlib.suppress(OSError):
            sock.close()


def _first_byte_problem(first: bytes) -> str | None:
    """Why the first byte of a plain connection rules out an association request, if it does."""
    if not first:
        return "closed before associating"
    if first[0] != A_ASSOCIATE_RQ:
        return "not a DICOM association request"
    return None


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
