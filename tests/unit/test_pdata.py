"""P-DATA-TF PDUs read into one buffer, their values handed on as views (listener.scp.pdata)."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from listener.scp import pdata
from listener.scp.guard import GuardedSocket


@dataclass
class FakeDul:
    """The parts of pynetdicom's DUL that reading a PDU touches."""

    connection: GuardedSocket
    event_queue: queue.Queue[str] = field(default_factory=queue.Queue)
    _recv_pdu: queue.Queue[Any] = field(default_factory=queue.Queue)
    stock_reads: int = 0

    @property
    def socket(self) -> Any:
        return type("AssociationSocket", (), {"socket": self.connection})()

    def read(self) -> None:
        """What the DUL reactor calls: our reading, pynetdicom's as its fallback."""

        def stock() -> None:
            self.stock_reads += 1

        pdata.read_pdu(self, stock)


@pytest.fixture
def wire() -> Iterator[tuple[FakeDul, socket.socket]]:
    ours, peer = socket.socketpair()
    guarded = GuardedSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    guarded.settimeout(5)
    yield FakeDul(guarded), peer
    guarded.close()
    peer.close()


def test_a_p_data_tf_gives_pynetdicoms_values_as_views_of_one_buffer(
    wire: tuple[FakeDul, socket.socket],
) -> None:
    """Two PDVs arrive as DT_2 expects them: Evt10 and the values pynetdicom decodes, uncopied."""
    dul, peer = wire
    values = [(1, b"\x03" + os.urandom(200)), (3, b"\x02" + os.urandom(300_000))]
    pdu = pdata.p_data_tf(*values)
    sender = threading.Thread(target=peer.sendall, args=(pdu,))  # more than the socket buffers
    sender.start()

    dul.read()
    sender.join()

    assert dul.event_queue.get_nowait() == "Evt10"
    got = dul._recv_pdu.get_nowait().to_primitive().presentation_data_value_list
    expected = P_DATA_TF()
    expected.decode(pdu)
    decoded = expected.to_primitive().presentation_data_value_list
    assert [(c, bytes(d)) for c, d in got] == [(c, bytes(d)) for c, d in decoded]
    assert all(isinstance(d, memoryview) for _, d in got)
    assert got[0][1].obj is got[1][1].obj  # one buffer
    assert dul.stock_reads == 0


def test_other_pdus_are_left_to_pynetdicom(wire: tuple[FakeDul, socket.socket]) -> None:
    """An A-RELEASE-RQ is not read here: pynetdicom's own reading takes it, bytes untouched."""
    dul, peer = wire
    release = struct.pack(">BBL", 0x05, 0, 4) + bytes(4)
    peer.sendall(release)

    dul.read()

    assert dul.stock_reads == 1 and dul.event_queue.empty()
    assert dul.connection.recv(100) == release


def test_a_pdv_running_past_its_pdu_is_an_invalid_pdu(wire: tuple[FakeDul, socket.socket]) -> None:
    """An item length beyond the PDU's end is Evt19 (pynetdicom's verdict on it too)."""
    dul, peer = wire
    items = struct.pack(">LB", 5000, 1) + b"\x03" + bytes(10)
    peer.sendall(struct.pack(">BBL", 0x04, 0, len(items)) + items)

    dul.read()

    assert dul.event_queue.get_nowait() == "Evt19"
    assert dul._recv_pdu.empty()


def test_a_peer_closing_mid_pdu_ends_the_connection(wire: tuple[FakeDul, socket.socket]) -> None:
    """Half a P-DATA-TF and then the end of the stream is Evt17, as with pynetdicom."""
    dul, peer = wire
    pdu = pdata.p_data_tf((1, b"\x02" + bytes(10_000)))
    peer.sendall(pdu[:5000])
    peer.shutdown(socket.SHUT_WR)

    dul.read()

    assert dul.event_queue.get_nowait() == "Evt17"


def test_an_oversized_p_data_tf_is_left_to_the_guard_on_pynetdicoms_path(
    wire: tuple[FakeDul, socket.socket],
) -> None:
    """Longer than the PDU limit: nothing is read here; the guard refuses it as pynetdicom reads."""
    dul, peer = wire
    dul.connection.max_p_data = 16384
    oversized = struct.pack(">BBL", 0x04, 0, 1 << 30) + bytes(64)
    peer.sendall(oversized)

    dul.read()

    assert dul.stock_reads == 1 and dul.event_queue.empty()
    with pytest.raises(OSError, match="refused"):
        dul.connection.recv(6)


def test_this_pynetdicom_is_read_the_fast_way() -> None:
    """The installed pynetdicom has the internals pdata stands in for: a DUL gets our reading."""
    dul = DULServiceProvider.__new__(DULServiceProvider)

    assert pdata.install(dul)
    assert dul._read_pdu_data.func is pdata.read_pdu  # type: ignore[attr-defined]
