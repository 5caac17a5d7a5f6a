"""Read P-DATA-TF PDUs into one buffer and hand their data on without copying it.

pynetdicom copies every received PDU's bytes several times before a DIMSE provider sees them:
into the read buffer, into the PDU's buffer, ``bytes()`` of that for the receive events, a slice
for the PDU's items, a slice per item, and ``data[1:]`` past each item's control header. For a
525 KB instance that was ~1.5 ms of ``memcpy`` on this VM (~2 GB/s), more than Orthanc needs for
the whole instance. :func:`install` makes a guarded association's DUL read each P-DATA-TF PDU
with one ``recv_into`` into a buffer of the PDU's length and give DT_2 a P-DATA indication
whose presentation data values are ``memoryview`` slices of it; our
:class:`~listener.scp.receive.Receiver` streams them to the spool file as they are.

Every other PDU, a TLS connection, a header not yet complete, a P-DATA-TF longer than the
guard allows (refused there, and logged by pynetdicom) and the replayed association request
take pynetdicom's own path. Both paths end the same way: Evt10 and the P-DATA for DT_2,
Evt17 when the connection fails or closes mid-PDU, Evt19 for a malformed PDU. The fast path
does not trigger EVT_DATA_RECV / EVT_PDU_RECV for P-DATA (pynetdicom's debug log of PDUs);
nothing of ours listens to them. When this pynetdicom's internals are not the ones expected,
:func:`install` leaves the association alone.
"""

from __future__ import annotations

import functools
import inspect
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

from pynetdicom import fsm
from pynetdicom.dul import LOGGER as PYNETDICOM_LOG
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

_P_DATA_TF = 0x04
_PDU_HEADER = struct.Struct(">BBL")  # type, reserved, length
_PDV_HEADER = struct.Struct(">LB")  # item length, presentation context ID


def p_data_tf(*values: tuple[int, bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of (context ID, control header + data) values."""
    items = b"".join(_PDV_HEADER.pack(len(data) + 1, context) + data for context, data in values)
    return _PDU_HEADER.pack(_P_DATA_TF, 0, len(items)) + items


def _pynetdicom_is_as_expected() -> bool:
    """True when DT_2 and the DUL's PDU reading are the ones this module stands in for."""
    try:
        dt_2 = inspect.getsource(fsm.DT_2)
        read = inspect.getsource(DULServiceProvider._read_pdu_data)
    except (OSError, TypeError, AttributeError):
        return False
    return (
        "dul._recv_pdu.get(False)" in dt_2
        and ".to_primitive()" in dt_2
        and "self._recv_pdu.put(pdu)" in read
        and "self.event_queue.put(event)" in read
        and hasattr(P_DATA(), "_presentation_data_value_list")
    )


_SUPPORTED = _pynetdicom_is_as_expected()


class _ReceivedPData:
    """What DT_2 takes off the DUL's queue of received PDUs: its P-DATA, already built."""

    __slots__ = ("_primitive",)

    def __init__(self, primitive: P_DATA) -> None:
        self._primitive = primitive

    def to_primitive(self) -> P_DATA:
        return self._primitive


def install(dul: DULServiceProvider) -> bool:
    """Read ``dul``'s P-DATA-TF PDUs with :func:`read_pdu`; False when pynetdicom differs."""
    if not _SUPPORTED:
        return False
    stock = dul._read_pdu_data
    dul._read_pdu_data = functools.partial(read_pdu, dul, stock)  # type: ignore[method-assign]
    return True


def read_pdu(dul: Any, stock: Callable[[], None]) -> None:
    """Read the next PDU: a P-DATA-TF here, anything else by pynetdicom (``stock``)."""
    connection = getattr(dul.socket, "socket", None)
    if (
        connection is None
        or getattr(connection, "replaying", True)
        or isinstance(connection, ssl.SSLSocket)
    ):
        stock()
        return
    try:
        head = connection.recv(_PDU_HEADER.size, socket.MSG_PEEK)
    except (OSError, TimeoutError):
        stock()  # pynetdicom meets the failure itself
        return
    if len(head) < _PDU_HEADER.size or head[0] != _P_DATA_TF:
        stock()
        return
    limit = getattr(connection, "max_p_data", 0)
    if limit and _PDU_HEADER.unpack(head)[2] > limit:
        stock()  # the guard refuses it there, and pynetdicom says so in its log
        return
    event, primitive = _read_p_data(connection)
    dul.event_queue.put(event)
    if primitive is not None:
        dul._recv_pdu.put(_ReceivedPData(primitive))


def _read_p_data(connection: Any) -> tuple[str, P_DATA | None]:
    """The FSM event and P-DATA of the P-DATA-TF PDU at the head of ``connection``."""
    try:
        header = bytearray(_PDU_HEADER.size)
        if connection.recv_into(header) != len(header):  # peeked: all there
            return "Evt17", None
        length = _PDU_HEADER.unpack(header)[2]  # checked by the guard as the header passed
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        while got < length:
            count = connection.recv_into(view[got:], length - got)
            if not count:
                break
            got += count
    except (OSError, TimeoutError):
        got = -1
    if got != length:
        PYNETDICOM_LOG.error("Connection closed before the entire PDU was received")
        return "Evt17", None
    values = _presentation_data_values(body, view)
    if values is None:
        return "Evt19", None
    primitive = P_DATA()
    primitive._presentation_data_value_list = values  # memoryviews: past the bytes-only setter
    return "Evt10", primitive


def _presentation_data_values(body: bytearray, view: memoryview) -> list[Any] | None:
    """``[context ID, control header + data]`` per PDV item (views of ``body``); None if bad."""
    values: list[Any] = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + _PDV_HEADER.size > end:
            return None
        item_length, context_id = _PDV_HEADER.unpack_from(body, offset)
        item_end = offset + 4 + item_length
        if item_length < 1 or item_end > end:
            return None
        values.append([context_id, view[offset + _PDV_HEADER.size : item_end]])
        offset = item_end
    return values
