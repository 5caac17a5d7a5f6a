"""Is a received DICOM file whole? A structural walk of its element lengths, reading no values.

pydicom reads a truncated dataset silently (short values, missing elements), and the header reader
stops before the pixel data anyway. This walk follows every element's declared length, sequences
and encapsulated fragments included, and reports a file that ends before its structure does.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

_META_GROUP = 0x0002
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_IMPLICIT_LE, _EXPLICIT_BE, _DEFLATED = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
)
_MAX_DEPTH = 32


class Truncated(Exception):
    """The file ends, or is malformed, before its declared structure does."""


class _Walker:
    def __init__(self, stream: BinaryIO, size: int, *, implicit: bool, little: bool) -> None:
        self._stream, self._size = stream, size
        self._implicit = implicit
        self._order = "<" if little else ">"

    def _read(self, count: int) -> bytes:
        data = self._stream.read(count)
        if len(data) != count:
            raise Truncated("file ends inside an element header")
        return data

    def _skip(self, length: int, end: int) -> None:
        target = self._stream.tell() + length
        if target > end:
            raise Truncated("a value runs past the end of its container")
        self._stream.seek(target)

    def _tag(self) -> int:
        group, element = struct.unpack(self._order + "HH", self._read(4))
        return int(group << 16 | element)

    def elements(self, end: int, depth: int = 0, *, until_item_end: bool = False) -> None:
        """Walk elements up to ``end`` (or an item delimiter when ``until_item_end``)."""
        if depth > _MAX_DEPTH:
            raise Truncated("sequences nested too deep")
        while self._stream.tell() < end:
            tag = self._tag()
            if tag == _ITEM_END and until_item_end:
                self._read(4)
                return
            vr, length = self._length(tag)
            if length != _UNDEFINED:
                self._skip(length, end)
            elif vr == b"UN" and not self._implicit:
                # PS3.5 6.2.2: an undefined-length UN holds implicit VR little endian items.
                _Walker(self._stream, self._size, implicit=True, little=True).items(end, depth + 1)
            else:
                self.items(end, depth + 1)
        if until_item_end:
            raise Truncated("item without its delimiter")

    def items(self, end: int, depth: int) -> None:
        """Walk items (sequence items or encapsulated fragments) up to the sequence delimiter."""
        while True:
            if self._stream.tell() >= end:
                raise Truncated("sequence without its delimiter")
            tag = self._tag()
            length = struct.unpack(self._order + "I", self._read(4))[0]
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise Truncated("expected an item inside a sequence")
            if length == _UNDEFINED:
                self.elements(end, depth, until_item_end=True)
            else:
                self._skip(length, end)

    def _length(self, tag: int) -> tuple[bytes, int]:
        """The element's VR (b"" when implicit) and value length."""
        if self._implicit or tag >> 16 == 0xFFFE:
            return b"", int(struct.unpack(self._order + "I", self._read(4))[0])
        vr = self._read(2)
        if not vr.isalpha() or not vr.isupper():
            # Explicit VR announced, implicit VR found (some writers do this; pydicom copes too).
            self._stream.seek(-2, 1)
            return b"", int(struct.unpack(self._order + "I", self._read(4))[0])
        if vr in _LONG_VRS:
            self._read(2)
            return vr, int(struct.unpack(self._order + "I", self._read(4))[0])
        return vr, int(struct.unpack(self._order + "H", self._read(2))[0])


def check_complete(path: str) -> None:
    """Raise :class:`Truncated` when the DICOM file at ``path`` ends before its structure does.

    Files without a File Meta header, or deflated ones (their structure is compressed), are not
    checked: pynetdicom always writes a File Meta header, naming the negotiated syntax.
    """
    with open(path, "rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(128)
        if stream.read(4) != b"DICM":
            return
        syntax = _meta_transfer_syntax(stream, size)
        if syntax == _DEFLATED:
            return
        walker = _Walker(
            stream, size, implicit=syntax == _IMPLICIT_LE, little=syntax != _EXPLICIT_BE
        )
        walker.elements(size)


def _meta_transfer_syntax(stream: BinaryIO, size: int) -> str:
    """Read the File Meta group (explicit VR little endian), leaving the stream at the dataset."""
    walker = _Walker(stream, size, implicit=False, little=True)
    syntax = _IMPLICIT_LE
    while stream.tell() < size:
        start = stream.tell()
        group = struct.unpack("<H", walker._read(2))[0]
        stream.seek(start)
        if group != _META_GROUP:
            break
        tag = walker._tag()
        _vr, length = walker._length(tag)
        if tag == 0x00020010:
            syntax = walker._read(length).decode("ascii", "replace").strip("\x00 ")
        else:
            walker._skip(length, size)
    return syntax
