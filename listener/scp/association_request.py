"""Reading and vetting a whole A-ASSOCIATE-RQ before pynetdicom is given the connection.

pynetdicom starts an association thread (and takes an association slot) as soon as a connection
is handed to it, and then trusts the request: a header announcing gigabytes holds the slot until
the ACSE timeout, and a presentation context without a transfer syntax kills its thread with an
IndexError before any answer is sent, leaving the connection open. The guard therefore reads the
complete request itself, within a deadline and a size limit, decodes it with pynetdicom's own
decoder and dry-runs pynetdicom's presentation context negotiation on it. Only a request that
passes reaches pynetdicom (which then reads the same bytes again); any other gets an
A-ASSOCIATE-RJ (PS3.8 9.3.4) and the connection is closed.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pynetdicom import _config
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import (
    PresentationContext,
    negotiate_as_acceptor,
    negotiate_unrestricted,
)

A_ASSOCIATE_RQ_TYPE = 0x01
# An A-ASSOCIATE-RQ with all 128 presentation contexts and dozens of transfer syntaxes each stays
# far below this.
MAX_REQUEST_BYTES = 1 << 20
# Smallest peer maximum PDU length we accept (0 means unlimited). No toolkit we know announces
# less (DCMTK's minimum is 4096, pynetdicom's and dcm4che's defaults are about 16 KiB); below it
# every response would be cut into dozens of PDUs, and at 1 pynetdicom cannot send at all.
MIN_PEER_PDU = 1024
# Protocol version, reserved, called and calling AE titles, reserved (PS3.8 Table 9-11).
_FIXED_FIELDS = 68

Recv = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send: result, source, reason (PS3.8 Table 9-21) and why, for the log."""

    result: int
    source: int
    reason: int
    why: str

    def pdu(self) -> bytes:
        """The encoded A-ASSOCIATE-RJ PDU."""
        return struct.pack(">BBIBBBB", 0x03, 0, 4, 0, self.result, self.source, self.reason)


def _malformed(why: str) -> Rejection:
    """Permanent, by the UL service provider (ACSE related), no reason given."""
    return Rejection(0x01, 0x02, 0x01, f"invalid association request: {why}")


def too_many_from_address(limit: int) -> Rejection:
    """Transient, by the UL service provider (presentation related), local limit exceeded."""
    return Rejection(0x02, 0x03, 0x02, f"too many associations from this address: {limit}")


class RequestProblem(Exception):
    """The peer did not send a complete A-ASSOCIATE-RQ in time (nothing to answer)."""


def read_request(recv: Recv, settimeout: Callable[[float], None], deadline: float) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU, read with ``recv`` before ``deadline`` (monotonic).

    Raises :class:`RequestProblem` when the peer stays silent, closes, stalls or sends something
    else. A header announcing more than :data:`MAX_REQUEST_BYTES` (or too few to be a request)
    is returned alone, for :func:`vet_request` to reject without reading on.
    """
    first = _read_exactly(recv, settimeout, 1, deadline, stalled="silent")
    if first[0] != A_ASSOCIATE_RQ_TYPE:
        raise RequestProblem("not a DICOM association request")
    header = first + _read_exactly(recv, settimeout, 5, deadline)
    length = struct.unpack(">I", header[2:6])[0]
    if length > MAX_REQUEST_BYTES or length < _FIXED_FIELDS:
        return header
    return header + _read_exactly(recv, settimeout, length, deadline)


def _read_exactly(
    recv: Recv,
    settimeout: Callable[[float], None],
    count: int,
    deadline: float,
    *,
    stalled: str = "association request not complete in time",
) -> bytes:
    chunks: list[bytes] = []
    missing = count
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestProblem(stalled)
        settimeout(remaining)
        try:
            chunk = recv(min(missing, 65536))
        except TimeoutError:
            raise RequestProblem(stalled) from None
        if not chunk:
            raise RequestProblem("closed before associating")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


class VettedRequests:
    """The verdicts on the last ``size`` distinct A-ASSOCIATE-RQs, by the SHA-256 of their bytes.

    A modality sends the same request bytes every time, and vetting one (pynetdicom's decoding
    and a trial negotiation of ~130 proposed contexts) took some 5 ms per association. The
    verdict is a function of the bytes and of our supported contexts, which do not change.
    """

    def __init__(self, supported: Sequence[PresentationContext], *, size: int = 256) -> None:
        self._supported = supported
        self._size = size
        self._verdicts: OrderedDict[bytes, Rejection | None] = OrderedDict()
        self._lock = threading.Lock()

    def vet(self, data: bytes) -> Rejection | None:
        """:func:`vet_request`'s verdict on ``data``, from memory when it was seen before."""
        key = hashlib.sha256(data).digest()
        with self._lock:
            if key in self._verdicts:
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        verdict = vet_request(data, self._supported)
        with self._lock:
            self._verdicts[key] = verdict
            while len(self._verdicts) > self._size:
                self._verdicts.popitem(last=False)
        return verdict


def vet_request(data: bytes, supported: Sequence[PresentationContext]) -> Rejection | None:
    """Why pynetdicom must not be given this A-ASSOCIATE-RQ, or None when it may."""
    length = struct.unpack(">I", data[2:6])[0]
    if length > MAX_REQUEST_BYTES:
        return _malformed(f"announces {length} bytes, more than {MAX_REQUEST_BYTES}")
    if length < _FIXED_FIELDS:
        return _malformed(f"announces {length} bytes, too few for a request")
    try:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(data)
        primitive = pdu.to_primitive()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's malformed PDU
        return _malformed(f"cannot be decoded ({type(exc).__name__})")
    if pdu.protocol_version & 0x0001 == 0:
        return Rejection(0x01, 0x02, 0x02, "protocol version not supported")
    return _user_information_problem(primitive) or _context_problem(primitive, supported)


def _user_information_problem(primitive: A_ASSOCIATE) -> Rejection | None:
    """Why the User Information item is unusable, if it is.

    It and its Maximum Length sub-item are mandatory (PS3.8 9.3.2, PS3.7 D.3.3.1); without them
    pynetdicom fails the first DIMSE message it sends. A tiny maximum PDU length is refused too.
    """
    if not primitive.user_information:
        return _malformed("no user information item")
    peer_pdu = primitive.maximum_length_received
    if peer_pdu is None:
        return _malformed("no maximum length sub-item")
    if 0 < peer_pdu < MIN_PEER_PDU:
        return _malformed(f"maximum PDU length {peer_pdu} below {MIN_PEER_PDU}")
    return None


def _context_problem(
    primitive: A_ASSOCIATE, supported: Sequence[PresentationContext]
) -> Rejection | None:
    """Run pynetdicom's own negotiation on a copy: what fails here would kill its thread."""
    requested = primitive.presentation_context_definition_list
    if not requested:
        return _malformed("no presentation context")
    for context in requested:
        if not context.abstract_syntax or not context.transfer_syntax:
            return _malformed(
                f"presentation context {context.context_id} lacks an abstract or transfer syntax"
            )
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    negotiate = (
        negotiate_unrestricted if _config.UNRESTRICTED_STORAGE_SERVICE else negotiate_as_acceptor
    )
    try:
        negotiate(requested, list(supported), roles)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - whatever breaks pynetdicom's negotiation
        return _malformed(f"presentation contexts cannot be negotiated ({type(exc).__name__})")
    return None
