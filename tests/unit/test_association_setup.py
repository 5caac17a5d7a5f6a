"""Accepting an association and reading its PDUs: fixed costs pynetdicom adds, taken away."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from pynetdicom import AE, evt

from listener.scp import association_request as association_request_module
from listener.scp.admission import _ReplayAwareSocket
from listener.scp.association_request import VettedRequests
from listener.scp.guard import GuardedServer
from tests.association_requests import association_request
from tests.support import free_port

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_associations_share_the_servers_supported_contexts_instead_of_copying_them() -> None:
    """No per-association deep copy of every supported context (~50 ms with all we take)."""
    seen: list[list[Any]] = []

    def accepted(event: evt.Event) -> None:
        seen.append(event.assoc.acceptor.supported_contexts)

    ae = AE()
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT)
    server = ae.make_server(
        ("127.0.0.1", free_port()),
        server_class=GuardedServer,
        evt_handlers=[(evt.EVT_ACCEPTED, accepted)],
    )
    assert isinstance(server, GuardedServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        requestor = AE()
        requestor.add_requested_context(VERIFICATION)
        association = requestor.associate("127.0.0.1", server.server_address[1])
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
        association.release()
    finally:
        server.shutdown()
        server.server_close()

    [contexts] = seen
    assert [id(c) for c in contexts] == [id(c) for c in server.contexts]


class TricklingSocket:
    """A connected socket stand-in that hands out at most ``chunk`` bytes per recv."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.reads = data, chunk, 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        taken, self.data = self.data[: min(size, self.chunk)], self.data[min(size, self.chunk) :]
        return taken


def association_socket(wire: TricklingSocket) -> Any:
    connection: Any = object.__new__(_ReplayAwareSocket)
    connection.socket = wire
    return connection


def test_a_pdu_is_read_in_as_few_reads_as_the_kernel_allows() -> None:
    """525 KB arriving 64 KiB at a time takes 9 reads, not pynetdicom's ~130 of 4 KiB."""
    body = os.urandom(525_000)
    wire = TricklingSocket(body, chunk=65536)

    assert association_socket(wire).recv(len(body)) == body
    assert wire.reads == 9


def test_a_read_cut_short_by_the_peer_returns_what_arrived() -> None:
    """A peer that closes mid-PDU leaves a short read (pynetdicom then reports Evt17)."""
    wire = TricklingSocket(b"x" * 1000, chunk=300)

    assert association_socket(wire).recv(5000) == b"x" * 1000


def test_a_request_seen_before_is_not_vetted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same A-ASSOCIATE-RQ bytes get the same verdict from memory; new bytes are vetted."""
    vetted: list[bytes] = []
    vet_request = association_request_module.vet_request

    def counting(data: bytes, supported: Any) -> Any:
        vetted.append(data)
        return vet_request(data, supported)

    monkeypatch.setattr(association_request_module, "vet_request", counting)
    ae = AE()
    ae.add_supported_context(VERIFICATION)
    requests = VettedRequests(ae.supported_contexts)
    sound, broken = association_request(), association_request(user_information=False)

    verdicts = [
        requests.vet(sound),
        requests.vet(sound),
        requests.vet(broken),
        requests.vet(broken),
    ]

    assert verdicts[0] is None and verdicts[1] is None
    assert verdicts[2] is not None and verdicts[3] == verdicts[2]
    assert vetted == [sound, broken]


def test_the_memory_of_verdicts_is_bounded() -> None:
    """Only the last ``size`` distinct requests are remembered: a peer cannot grow it."""
    ae = AE()
    ae.add_supported_context(VERIFICATION)
    requests = VettedRequests(ae.supported_contexts, size=4)
    for index in range(10):
        requests.vet(association_request(calling_ae=f"PEER{index}".encode()))

    assert len(requests._verdicts) == 4
