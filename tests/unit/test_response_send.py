"""C-STORE responses sent by the association's own thread, and when they are not."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from listener.scp.admission import _ReplayAwareSocket
from listener.scp.pdata import p_data_tf
from tests.unit.test_spool import RecordingSink, received_by_a_server


@contextmanager
def guarded_pair() -> Iterator[tuple[_ReplayAwareSocket, socket.socket]]:
    """A guarded association socket and the peer's end of its connection."""
    ours, peer = socket.socketpair()
    fake_association = cast(Any, SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue())))
    wrapped = _ReplayAwareSocket(fake_association, client_socket=ours)
    wrapped.send_lock = threading.Lock()
    with ours, peer:
        peer.settimeout(2)
        yield wrapped, peer


@pytest.mark.parametrize(("context_id", "size"), [(1, 0), (1, 100), (255, 16000)])
def test_p_data_tf_is_what_pynetdicom_encodes(context_id: int, size: int) -> None:
    """The directly built P-DATA-TF is byte for byte pynetdicom's encoding of the same PDV."""
    pdv = b"\x03" + bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, pdv))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)

    assert p_data_tf((context_id, pdv)) == pdu.encode()


def test_c_store_responses_leave_from_the_association_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No response is queued for the DUL thread: the handler's thread sends it (both 0x0000)."""
    queued: list[object] = []
    send_pdu = DULServiceProvider.send_pdu

    def recording(self: DULServiceProvider, primitive: Any) -> None:
        if isinstance(self.socket, _ReplayAwareSocket):  # the listener's side, not the SCU's
            queued.append(primitive)
        send_pdu(self, primitive)

    monkeypatch.setattr(DULServiceProvider, "send_pdu", recording)
    received_by_a_server(tmp_path, RecordingSink(monkeypatch))  # asserts both answered 0x0000

    assert not [primitive for primitive in queued if isinstance(primitive, P_DATA)]


def test_send_now_sends_while_established() -> None:
    """In Sta6 the PDU goes out at once, whole."""
    with guarded_pair() as (wrapped, peer):
        assert wrapped.send_now(b"\x04\x00\x00\x00\x00\x00", lambda: "Sta6")
        assert peer.recv(64) == b"\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("state", ["Sta7", "Sta8", "Sta13", "Sta1"])
def test_send_now_leaves_other_states_to_pynetdicom(state: str) -> None:
    """Releasing, aborting or closed: nothing is sent, the caller queues the PDU instead."""
    with guarded_pair() as (wrapped, peer):
        assert not wrapped.send_now(b"\x04\x00\x00\x00\x00\x00", lambda: state)
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(64)


def test_send_now_leaves_tls_connections_to_pynetdicom() -> None:
    """An SSL object must not write while the DUL thread reads it: TLS takes the queue."""
    with guarded_pair() as (wrapped, _peer):
        plain = wrapped.socket
        assert plain is not None
        context = ssl.create_default_context()
        wrapped.socket = context.wrap_socket(
            socket.socket(), server_hostname="peer", do_handshake_on_connect=False
        )
        try:
            assert not wrapped.send_now(b"\x04\x00\x00\x00\x00\x00", lambda: "Sta6")
        finally:
            wrapped.socket.close()
            wrapped.socket = plain


def test_a_failed_send_now_tells_the_state_machine_the_connection_closed() -> None:
    """A send on a broken connection queues Evt17, as pynetdicom's own send does."""
    with guarded_pair() as (wrapped, peer):
        peer.close()
        events = wrapped.event_queue
        assert events.get_nowait() == "Evt5"  # the connection indication, at wrapping
        for _ in range(3):  # the first send may still be buffered; a later one fails
            wrapped.send_now(b"\x04\x00\x00\x00\x00\x00" * 1000, lambda: "Sta6")
        assert events.get(timeout=1) == "Evt17"
