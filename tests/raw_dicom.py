"""A DICOM peer at the PDU level: the faults no real SCU produces (PS3.8 section 9 encodings)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
A_ASSOCIATE_AC, P_DATA, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x02, 0x04, 0x05, 0x06, 0x07
COMMAND_LAST, DATA, DATA_LAST = 0x03, 0x00, 0x02


def _item(kind: int, data: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(data)) + data


def pdu(kind: int, body: bytes) -> bytes:
    """A PDU of ``kind`` around ``body``."""
    return struct.pack(">BBI", kind, 0, len(body)) + body


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One presentation data value item (length, context, message control header, data)."""
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def associate_rq(contexts: dict[int, tuple[str, str]], calling: str = "RAWSCU") -> bytes:
    """An A-ASSOCIATE-RQ proposing ``{context id: (abstract syntax, transfer syntax)}``."""
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for context_id, (abstract, syntax) in contexts.items():
        sub = _item(0x30, abstract.encode()) + _item(0x40, syntax.encode())
        items += _item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    items += _item(0x50, _item(0x51, struct.pack(">I", 0)) + _item(0x52, b"1.2.826.0.1.3680043.9"))
    header = struct.pack(">HH", 1, 0) + b"DICOM-LISTENER".ljust(16) + calling.encode().ljust(16)
    return pdu(0x01, header + b"\0" * 32 + items)


def command(field_value: int, *, has_dataset: bool = True, **elements: object) -> bytes:
    """An encoded command set (Implicit VR LE) with its group length."""
    dataset = Dataset()
    dataset.CommandGroupLength = 0
    dataset.CommandField = field_value
    dataset.MessageID = int(str(elements.pop("MessageID", 1)))
    dataset.CommandDataSetType = 0x0001 if has_dataset else 0x0101
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    encoded = encode(dataset, True, True)
    assert encoded is not None
    dataset.CommandGroupLength = len(encoded) - 12
    final = encode(dataset, True, True)
    assert final is not None
    return final


def store_command(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set."""
    return command(
        0x0001,
        AffectedSOPClassUID=sop_class,
        AffectedSOPInstanceUID=sop_instance,
        Priority=0,
        MessageID=message_id,
    )


def encoded(dataset: Dataset, *, implicit: bool) -> bytes:
    """``dataset`` encoded as a data set (no File Meta) in Implicit or Explicit VR LE."""
    data = encode(dataset, implicit, True)
    assert data is not None
    return data


@dataclass
class RawAssociation:
    """One association driven PDU by PDU."""

    port: int
    contexts: dict[int, tuple[str, str]]
    accepted: dict[int, int] = field(default_factory=dict)  # context id -> result (0 accepted)
    tls: ssl.SSLContext | None = None
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.tls is not None:
            self.sock = self.tls.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.sendall(associate_rq(self.contexts))
        kind, body = self.read_pdu()
        assert kind == A_ASSOCIATE_AC, f"association not accepted (PDU 0x{kind:02X})"
        offset = 68
        while offset < len(body):
            item_type, _, length = struct.unpack(">BBH", body[offset : offset + 4])
            if item_type == 0x21:
                self.accepted[body[offset + 4]] = body[offset + 6]
            offset += 4 + length

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def send_pdvs(self, *pdvs: bytes) -> None:
        """Send one P-DATA-TF PDU holding ``pdvs``."""
        self.send(pdu(P_DATA, b"".join(pdvs)))

    def store(self, context_id: int, cmd: bytes, data: bytes, *, chunk: int = 16000) -> None:
        """Send a command and its data set as one PDU each (the data set in PDVs of ``chunk``)."""
        self.send_pdvs(pdv(context_id, COMMAND_LAST, cmd))
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            self.send_pdvs(pdv(context_id, DATA_LAST if last else DATA, piece))

    def read_exact(self, count: int) -> bytes:
        """Exactly ``count`` bytes, or ConnectionError when the peer closes first."""
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed by the listener")
            data += chunk
        return data

    def read_pdu(self) -> tuple[int, bytes]:
        """The next PDU's type and body."""
        kind, _, length = struct.unpack(">BBI", self.read_exact(6))
        return kind, self.read_exact(length)

    def response(self) -> Dataset:
        """The next DIMSE response's command set (ConnectionError on anything but P-DATA)."""
        encoded_command = b""
        while True:
            kind, body = self.read_pdu()
            if kind != P_DATA:
                raise ConnectionError(f"PDU 0x{kind:02X} instead of a response")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack(">I", body[offset : offset + 4])
                control = body[offset + 5]
                value = body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 1:
                    encoded_command += value
                    if control & 2:
                        return decode(BytesIO(encoded_command), True, True)

    def status(self) -> int:
        """The Status of the next response."""
        return int(self.response().Status)

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the listener ends the connection (A-ABORT or close), None if it did not."""
        started = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while True:
                kind, _body = self.read_pdu()
                if kind == A_ABORT:
                    return time.monotonic() - started
        except (ConnectionError, OSError):
            return time.monotonic() - started if time.monotonic() - started < seconds else None

    def close(self) -> None:
        """Drop the connection."""
        with contextlib.suppress(OSError):
            self.sock.close()
