"""Wake pynetdicom's threads when they have work instead of letting them poll every millisecond.

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

The association's own thread (its reactor) polls too: it sleeps 1 ms, then takes the next DIMSE
message off its queue. :func:`install` also replaces that one sleep (``time.sleep(0.001)`` in
``Association._run_reactor``, checked in its source) with a wait that ends as soon as our
:class:`~listener.scp.receive.Receiver` queues a message, never later than the sleep would have.
Every other sleep of ``pynetdicom.association`` (the abort path's 0.1 s, ``kill``'s 10 ms, an
SCU's waits) is left as it is, as is every association whose messages another provider receives.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import association, dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from listener.logs import get_logger
from listener.scp.guard import Wakeable

log = get_logger("listener.scp")

_install_lock = threading.Lock()
_REACTOR_POLL = 0.001  # the reactor's sleep in pynetdicom 2.x/3.x: time.sleep(0.001)
_REACTOR_SOURCE = ("time.sleep(0.001)", "self.dimse.get_msg(block=False)")


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


class _AssociationTime:
    """Stands in for ``time`` in ``pynetdicom.association``; only the reactor's sleep differs."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Wait for a message when called as a receiving association's reactor poll, else sleep."""
        wait = _message_wait_of(threading.current_thread()) if seconds == _REACTOR_POLL else None
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


def _message_wait_of(thread: object) -> Callable[[float], None] | None:
    if not isinstance(thread, Association):
        return None
    wait = getattr(thread.dimse, "wait_for_message", None)
    return wait if callable(wait) else None


def _reactor_is_expected() -> bool:
    """True when ``pynetdicom.association`` polls as this module expects (its source is read)."""
    if getattr(association, "time", None) is not time:
        return False
    try:
        source = inspect.getsource(Association._run_reactor)
    except (OSError, TypeError):
        return False
    return all(fragment in source for fragment in _REACTOR_SOURCE)


def install() -> bool:
    """Patch pynetdicom once per process; False when its internals are not as expected."""
    with _install_lock:
        _install_reactor()
        return _install_dul()


def _install_reactor() -> None:
    """Patch the association reactor's poll, or leave it (with a warning) when unexpected."""
    if isinstance(getattr(association, "time", None), _AssociationTime):
        return
    if not _reactor_is_expected():
        log.warning("pynetdicom's association reactor is not the expected one; it keeps polling")
        return
    setattr(association, "time", _AssociationTime())  # noqa: B010 - a module global


def _install_dul() -> bool:
    """Patch pynetdicom's DUL; False when its internals are not as expected."""
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
