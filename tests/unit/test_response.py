"""C-STORE responses encoded directly are byte for byte what pynetdicom would send."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from pydicom.tag import Tag
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from listener.scp.response import encoded_c_store_response

CT = "1.2.840.10008.5.1.4.1.1.2"


def response(status: int, comment: str | None = None, instance: str = "1.2.3.45") -> Any:
    primitive: Any = C_STORE()  # its attributes are typed None until set
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    if comment is not None:
        primitive.ErrorComment = comment
    return primitive


def pynetdicom_encoding(primitive: C_STORE) -> bytes:
    """The command set pynetdicom's send_msg would put in the (single) P-DATA."""
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    [pdata] = list(message.encode_msg(1, 16384))
    [(_context, pdv)] = pdata.presentation_data_value_list
    assert pdv[0] == 0x03  # command, last fragment
    return bytes(pdv[1:])


@pytest.mark.parametrize(
    "primitive",
    [
        response(0x0000),
        response(0x0000, instance="1.2.3.4"),  # odd length: padded
        response(0x0110, "Duplicate"),  # odd comment: padded
        response(0xA700, "Out of resources"),
        response(0xB000, instance="1." + "2" * 62),
    ],
)
def test_a_plain_response_is_encoded_as_pynetdicom_does(primitive: C_STORE) -> None:
    """Same bytes as pynetdicom's primitive_to_message + encode_msg."""
    assert encoded_c_store_response(primitive) == pynetdicom_encoding(primitive)


def test_anything_else_is_left_to_pynetdicom() -> None:
    """An Offending Element, a non-ASCII comment or an unusual UID: None (pynetdicom encodes)."""
    offending = response(0xA900)
    offending.OffendingElement = [Tag(0x00100010)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the UID, and keeps it
        unusual_uid = response(0, instance="1.2.3a")
    others = [offending, response(0x0110, "Fehler ä"), unusual_uid]

    assert [encoded_c_store_response(primitive) for primitive in others] == [None] * 3
