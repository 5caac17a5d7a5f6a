"""Accepting an association: what each one costs before the A-ASSOCIATE-AC goes out."""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom import AE, evt

from listener.scp.guard import GuardedServer
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
