"""The preamble, ``DICM`` prefix and File Meta Information written before a spooled data set.

Every C-STORE's spool file starts with them. Encoding them with pydicom costs a fifth of a
millisecond per instance on the thread that reads the association, so the usual case (UIDs of
digits and dots, at most 64 characters) is encoded here directly, byte for byte what pydicom
writes; anything else still goes through pydicom, which decides what it accepts.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta, encode_file_meta

_PREAMBLE = b"\0" * 128 + b"DICM"
_UID_CHARACTERS = frozenset("0123456789.")
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"  # (0002,0000) UL, 4 bytes
_VERSION = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"  # (0002,0001) OB 00\01


def file_header(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Preamble, DICM prefix and File Meta Information of a spooled instance."""
    if not all(plain_uid(uid) for uid in (sop_class, sop_instance, syntax)):
        return _PREAMBLE + _pydicom_meta(sop_class, sop_instance, syntax)
    elements = b"".join(
        (
            _VERSION,
            _short(b"\x02\x00\x02\x00UI", ui_value(sop_class)),
            _short(b"\x02\x00\x03\x00UI", ui_value(sop_instance)),
            _short(b"\x02\x00\x10\x00UI", ui_value(syntax)),
            _short(b"\x02\x00\x12\x00UI", ui_value(str(PYNETDICOM_IMPLEMENTATION_UID))),
            _short(b"\x02\x00\x13\x00SH", text_value(PYNETDICOM_IMPLEMENTATION_VERSION)),
        )
    )
    return _PREAMBLE + _GROUP_LENGTH + len(elements).to_bytes(4, "little") + elements


def _pydicom_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    meta = create_file_meta(
        sop_class_uid=UID(sop_class),
        sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax),
    )
    return encode_file_meta(meta)


def plain_uid(uid: object) -> bool:
    """True for a UID of digits and dots, 1 to 64 characters: encoded here, not by pydicom."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and _UID_CHARACTERS.issuperset(uid)


def _short(tag_and_vr: bytes, value: bytes) -> bytes:
    """An explicit VR little endian element with a 16-bit length."""
    return tag_and_vr + len(value).to_bytes(2, "little") + value


def ui_value(uid: str) -> bytes:
    """A UI value: ASCII, padded to an even length with a NUL."""
    value = uid.encode("ascii")
    return value + b"\0" if len(value) % 2 else value


def text_value(text: str) -> bytes:
    """An SH or LO value: ASCII, padded to an even length with a space."""
    value = text.encode("ascii")
    return value + b" " if len(value) % 2 else value
