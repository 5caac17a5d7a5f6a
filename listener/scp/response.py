"""C-STORE responses encoded directly: the common answer skips pydicom's command-set encoding.

pynetdicom turns every response primitive into a pydicom command set and encodes it: about a
seventh of the association thread's time per C-STORE on a loaded machine. The usual response (the
request's UIDs, a status, at most an ASCII Error Comment) is the same few elements each time, so
:func:`encoded_c_store_response` writes them byte for byte as pynetdicom would (implicit VR little
endian, group length first); any other response returns None and takes pynetdicom's own path.

The association's thread also sends it itself (``send_now`` of the guarded socket) instead of
queueing it for the DUL thread: handing over cost ~0.25 ms per C-STORE, the DUL thread waking and
then taking the GIL from the association's thread, which goes on running meanwhile (README
"Performance"). A TLS connection, or one whose state is not Sta6, takes the queue.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from listener.scp.file_meta import plain_uid, text_value, ui_value
from listener.scp.pdata import p_data_tf

_C_STORE_RSP = 0x8001
_NO_DATASET = 0x0101


def send_plain_response(provider: DIMSEServiceProvider, primitive: Any, context_id: int) -> bool:
    """Send ``primitive`` in one P-DATA if it is a plain C-STORE response; False if not sent.

    Not when someone listens to ``EVT_DIMSE_SENT`` (it expects pynetdicom's message object) or
    the peer's PDU limit would need the command set split.
    """
    encoded = encoded_c_store_response(primitive)
    limit = provider.maximum_pdu_size
    if (
        encoded is None
        or (limit and len(encoded) + 6 > limit)
        or provider.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        return False
    pdv = b"\x03" + encoded  # message control header: the last fragment of a command
    if _send_now(provider, context_id, pdv):
        return True
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, pdv))
    provider.dul.send_pdu(pdata)
    return True


def _send_now(provider: DIMSEServiceProvider, context_id: int, pdv: bytes) -> bool:
    """Send one PDV as a P-DATA-TF from this thread; False when the DUL thread must send it."""
    send_now = getattr(provider.dul.socket, "send_now", None)
    assoc = provider.assoc
    if send_now is None or assoc.get_handlers(evt.EVT_PDU_SENT):
        return False
    if assoc.get_handlers(evt.EVT_DATA_SENT):
        return False
    pdu = p_data_tf((context_id, pdv))
    return bool(send_now(pdu, lambda: provider.dul.state_machine.current_state))


def encoded_c_store_response(primitive: Any) -> bytes | None:
    """The command set of a plain C-STORE response, or None when pynetdicom must encode it."""
    if not isinstance(primitive, C_STORE) or not _plain(primitive):
        return None
    sop_class, sop_instance = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    message_id, status = primitive.MessageIDBeingRespondedTo, primitive.Status
    assert message_id is not None and status is not None  # _plain
    elements = [
        _element(0x0002, ui_value(str(sop_class))),
        _element(0x0100, _us(_C_STORE_RSP)),
        _element(0x0120, _us(int(message_id))),
        _element(0x0800, _us(_NO_DATASET)),
        _element(0x0900, _us(int(status))),
    ]
    if primitive.ErrorComment is not None:
        elements.append(_element(0x0902, text_value(primitive.ErrorComment)))
    elements.append(_element(0x1000, ui_value(str(sop_instance))))
    body = b"".join(elements)
    return _element(0x0000, len(body).to_bytes(4, "little")) + body


def _plain(primitive: C_STORE) -> bool:
    """A response with the request's UIDs, a status and at most an ASCII comment, nothing else."""
    comment = primitive.ErrorComment
    return (
        primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.OffendingElement is None
        and primitive.DataSet is None
        and (comment is None or (comment.isascii() and 0 < len(comment) <= 64))
        and all(
            plain_uid(uid)
            for uid in (primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID)
        )
    )


def _element(element: int, value: bytes) -> bytes:
    """An implicit VR little endian element of group 0000."""
    return b"\x00\x00" + element.to_bytes(2, "little") + len(value).to_bytes(4, "little") + value


def _us(number: int) -> bytes:
    return number.to_bytes(2, "little")
