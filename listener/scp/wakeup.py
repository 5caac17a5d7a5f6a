"""Wake pynetdicom's DUL thread when it has work instead of letting it poll every millisecond.

Each association has a DUL thread that, when idle, sleeps ``_run_loop_delay`` (1 ms) before it
looks at its socket and at the queue of PDUs to send again. Every C-STORE waits for that poll
twice: once before the request is noticed and once before the response goes out. On one
association that caps a bare pynetdicom SCP near 330 instances/s; without the waits it does
over 500 (``benchmarks/``).

:func:`install` replaces the DUL module's idle ``time.sleep`` with a wait that ends as soon as the
association's socket is readable or a PDU is queued for sending (``send_pdu`` signals it), and
never later than the sleep would have. Only connections accepted by
:class:`listener.scp.guard.GuardedServer` carry the wake-up socket; every other DUL thread (our
own outgoing associations) sleeps as before, as does everything when this pynetdicom's internals
are not the ones expected.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pynetdicom import dul
from pynetdicom.dul import DULServiceProvider

from listener.logs import get_logger
from listener.scp.guard import Wakeable

log = get_logger("listener.scp")

_install_lock = threading.Lock()


class _DulTime:
    """Stands in for the ``time`` module inside ``pynetdicom.dul``; only ``sleep`` differs."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Wait for work when called by a guarded association's DUL thread, else sleep."""
        connection = _wakeable_of(threading.current_thread())
        if connection is None:
            time.sleep(seconds)
        else:
            connection.wait_for_work(seconds)


def _wakeable_of(thread: object) -> Wakeable | None:
    if not isinstance(thread, DULServiceProvider):
        return None
    connection = getattr(thread.socket, "socket", None)
    return connection if isinstance(connection, Wakeable) else None


def install() -> bool:
    """Patch pynetdicom's DUL once per process; False when its internals are not as expected."""
    with _install_lock:
        if isinstance(getattr(dul, "time", None), _DulTime):
            return True
        original_send_pdu = getattr(DULServiceProvider, "send_pdu", None)
        if getattr(dul, "time", None) is not time or original_send_pdu is None:
            log.warning("pynetdicom's DUL is not the expected one; it keeps polling every 1 ms")
            return False

        def send_pdu(self: DULServiceProvider, primitive: Any) -> None:
            original_send_pdu(self, primitive)
            connection = getattr(self.socket, "socket", None)
            if isinstance(connection, Wakeable):
                connection.wake()

        setattr(dul, "time", _DulTime())  # noqa: B010 - a module global, not an attribute we own
        setattr(DULServiceProvider, "send_pdu", send_pdu)  # noqa: B010
        return True
