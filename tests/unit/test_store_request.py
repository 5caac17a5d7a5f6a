"""C-STORE-RQ command sets read directly, and every case left to pynetdicom."""

from __future__ import annotations

import struct
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from listener.scp.store_request import read_store_request
from tests.modality import CT_IMAGE_STORAGE, make_study
from tests.unit.test_spool import RecordingSink, dicom_server, received_by_a_server

CT = "1.2.840.10008.5.1.4.1.1.2"
PRIMITIVE_FIELDS = (
    "MessageID",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
)


def encoded_store(**fields: Any) -> bytes:
    """The command set pynetdicom encodes for a C-STORE-RQ with ``fields``."""
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Priority = 2
    for name, value in fields.items():
        setattr(primitive, name, value)
    primitive.DataSet = BytesIO(b"x")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def pynetdicoms_primitive(encoded: bytes) -> Any:
    """The primitive pynetdicom's own decoding gives for a command set."""
    message = C_STORE_RQ()
    message.command_set = decode(BytesIO(encoded), True, True)
    message.context_id = 1
    message.data_set = BytesIO(b"")
    return message.message_to_primitive()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"AffectedSOPInstanceUID": "1.2.3"},  # odd length: padded with a NUL
        {"Priority": 0, "MessageID": 65535},
        {
            "Priority": 1,
            "MoveOriginatorApplicationEntityTitle": "PACS",
            "MoveOriginatorMessageID": 3,
        },
        {"AffectedSOPInstanceUID": "1." + "2" * 62},  # 64 characters
    ],
)
def test_a_plain_request_gives_pynetdicoms_primitive(fields: dict[str, Any]) -> None:
    """Every parameter read directly equals what pynetdicom's decoding and copying give."""
    encoded = encoded_store(**fields)
    request = read_store_request(encoded)

    assert request is not None and request.has_dataset
    direct = request.primitive(1, BytesIO(b""), None)
    expected = pynetdicoms_primitive(encoded)
    for name in PRIMITIVE_FIELDS:
        assert getattr(direct, name) == getattr(expected, name), name
    assert direct._context_id == expected._context_id == 1


def _element(element: int, value: bytes, group: int = 0) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


@pytest.mark.parametrize(
    ("case", "encoded"),
    [
        ("C-ECHO", None),
        ("an element a C-STORE-RQ has not", encoded_store() + _element(0x0901, b"\x00\x00")),
        ("another group", encoded_store() + _element(0x0010, b"PN", group=0x0008)),
        ("a duplicate", encoded_store() + _element(0x0700, b"\x00\x00")),
        ("a US of 4 bytes", encoded_store()[:-12] + _element(0x0700, b"\x00\x00\x00\x00")),
        ("two UIDs in one", encoded_store(AffectedSOPInstanceUID="1.2") + b""),
        ("a cut element", encoded_store()[:-3]),
        ("a UID over 64 bytes", encoded_store() + _element(0x1030, b"A" * 66)),
    ],
)
def test_anything_else_is_left_to_pynetdicom(case: str, encoded: bytes | None) -> None:
    """Not a plain C-STORE-RQ: None, and pynetdicom decodes it as before."""
    if case == "C-ECHO":
        echo = C_ECHO()
        echo.MessageID = 1
        message = C_ECHO_RQ()
        message.primitive_to_message(echo)
        encoded = encode(message.command_set, True, True)
    if case == "two UIDs in one":
        uid = b"1.2\\3.4\x00"
        assert encoded is not None
        start = encoded.index(b"1.2\x00")
        encoded = encoded[: start - 4] + struct.pack("<I", len(uid)) + uid + encoded[start + 4 :]
    assert encoded is not None

    assert read_store_request(encoded) is None


def pynetdicom_conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOP Instance UID of each C-STORE-RQ pynetdicom's message object converts, from now."""
    converted: list[str] = []
    original = C_STORE_RQ.message_to_primitive

    def recording(message: C_STORE_RQ) -> Any:
        converted.append(str(message.command_set.AffectedSOPInstanceUID))
        return original(message)

    monkeypatch.setattr(C_STORE_RQ, "message_to_primitive", recording)
    return converted


def test_a_received_c_store_builds_no_pynetdicom_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's C-STOREs skip pynetdicom's message object (both answered 0x0000)."""
    converted = pynetdicom_conversions(monkeypatch)
    received_by_a_server(tmp_path, RecordingSink(monkeypatch))

    assert converted == []


def test_a_handler_that_reads_the_message_gets_pynetdicoms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pynetdicom's logging handlers bound (they read the message), its path is taken."""
    converted = pynetdicom_conversions(monkeypatch)
    sink = RecordingSink(monkeypatch)
    with dicom_server(tmp_path, sink) as port:
        monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")  # the server set "none"
        association = modality().associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
        try:
            [dataset] = make_study(1, series=1)
            assert association.send_c_store(dataset).Status == 0x0000
        finally:
            association.release()

    assert converted == [dataset.SOPInstanceUID]
    assert [incoming.sop_instance_uid for incoming, _ in sink.received] == converted


def test_the_idle_limit_after_a_directly_read_c_store_is_the_longer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a C-STORE, silence past idle_timeout_before_dimse does not end the association."""
    sink = RecordingSink(monkeypatch)
    limits = {
        "LISTENER_DICOM__IDLE_TIMEOUT_BEFORE_DIMSE_SECONDS": "1",
        "LISTENER_DICOM__IDLE_TIMEOUT_SECONDS": "30",
    }
    with dicom_server(tmp_path, sink, **limits) as port:
        association = modality().associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
        try:
            first, second = make_study(2, series=1)
            assert association.send_c_store(first).Status == 0x0000
            time.sleep(1.6)
            assert association.is_established
            assert association.send_c_store(second).Status == 0x0000
        finally:
            association.release()


def modality() -> AE:
    """An SCU proposing CT storage in explicit VR little endian."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae
