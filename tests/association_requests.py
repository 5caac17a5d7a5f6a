"""Hand-made A-ASSOCIATE-RQ PDUs and raw connections from chosen loopback addresses."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

VERIFICATION = b"1.2.840.10008.1.1"
CT_IMAGE_STORAGE = b"1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LITTLE = b"1.2.840.10008.1.2.1"
Context = tuple[bytes | None, list[bytes]]  # abstract syntax (None: left out), transfer syntaxes


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def association_request(
    contexts: list[Context] | None = None,
    *,
    user_information: bool = True,
    max_pdu: int | None = 16384,
    calling_ae: bytes = b"RAW-PEER",
    called_ae: bytes = b"DICOM-LISTENER",
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2), with the parts a test wants to break."""
    contexts = contexts if contexts is not None else [(VERIFICATION, [EXPLICIT_LITTLE])]
    body = struct.pack(">HH", 1, 0) + called_ae.ljust(16) + calling_ae.ljust(16) + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for index, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, abstract) if abstract is not None else b""
        sub += b"".join(_item(0x40, syntax) for syntax in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", 2 * index + 1, 0, 0, 0) + sub)
    if user_information:
        user = _item(0x51, struct.pack(">I", max_pdu)) if max_pdu is not None else b""
        body += _item(0x50, user + _item(0x52, b"1.2.826.0.1.3680043.9.7433.1"))
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def absurd_request_header(length: int = 0xFFFFFFF0) -> bytes:
    """38 bytes: an A-ASSOCIATE-RQ header announcing ``length`` bytes, and the start of a body."""
    return struct.pack(">BBI", 0x01, 0, length) + struct.pack(">HH", 1, 0) + b"X" * 28


def connect_from(source: str, port: int, *, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to the listener on 127.0.0.1 from loopback address ``source``."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    connection.bind((source, 0))
    connection.connect(("127.0.0.1", port))
    return connection


def read_pdu(connection: socket.socket) -> tuple[int, bytes]:
    """The type and body of the next PDU, or (0, b"") when the connection closes first."""
    header = _read(connection, 6)
    if len(header) < 6:
        return 0, b""
    kind, _, length = struct.unpack(">BBI", header)
    return kind, _read(connection, length)


def rejection_of(connection: socket.socket) -> tuple[int, int, int] | None:
    """(result, source, reason) of the A-ASSOCIATE-RJ received, or None for anything else."""
    kind, body = read_pdu(connection)
    return (body[1], body[2], body[3]) if kind == 0x03 else None


def _read(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        try:
            chunk = connection.recv(count - len(data))
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def threads_and_descriptors(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))
