"""Is a received DICOM file whole? A structural walk of its element lengths, reading no values.

pydicom reads a truncated dataset silently (short values, missing elements), and the header reader
stops before the pixel data anyway. This walk follows every element's declared length, sequences
and encapsulated fragments included, and reports a file that ends before its structure does.
"""

from __future__ import annotations

import mmap
import os
import struct

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
    """Follows element headers through a memory-mapped file by offset; values are never read."""

    def __init__(self, data: mmap.mmap, *, implicit: bool, little: bool) -> None:
        self._data = data
        self._size = len(data)
        self._implicit = implicit
        self._order = "<" if little else ">"
        self.offset = 0

    def _unpack(self, fmt: str, count: int) -> tuple[int, ...]:
        if self.offset + count > self._size:
            raise Truncated("file ends inside an element header")
        values = struct.unpack_from(self._order + fmt, self._data, self.offset)
        self.offset += count
        return values

    def _skip(self, length: int, end: int) -> None:
        if self.offset + length > end:
            raise Truncated("a value runs past the end of its container")
        self.offset += length

    def _tag(self) -> int:
        group, element = self._unpack("HH", 4)
        return int(group << 16 | element)

    def elements(self, end: int, depth: int = 0, *, until_item_end: bool = False) -> None:
        """Walk elements up to ``end`` (or an item delimiter when ``until_item_end``)."""
        if depth > _MAX_DEPTH:
            raise Truncated("sequences nested too deep")
        while self.offset < end:
            tag = self._tag()
            if tag == _ITEM_END and until_item_end:
                self._unpack("I", 4)
                return
            vr, length = self._length(tag)
            if length != _UNDEFINED:
                self._skip(length, end)
            elif vr == b"UN" and not self._implicit:
                # PS3.5 6.2.2: an undefined-length UN holds implicit VR little endian items.
                inner = _Walker(self._data, implicit=True, little=True)
                inner.offset = self.offset
                inner.items(end, depth + 1)
                self.offset = inner.offset
            else:
                self.items(end, depth + 1)
        if until_item_end:
            raise Truncated("item without its delimiter")

    def items(self, end: int, depth: int) -> None:
        """Walk items (sequence items or encapsulated fragments) up to the sequence delimiter."""
        while True:
            if self.offset >= end:
                raise Truncated("sequence without its delimiter")
            tag = self._tag()
            (length,) = self._unpack("I", 4)
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
            return b"", self._unpack("I", 4)[0]
        if self.offset + 2 > self._size:
            raise Truncated("file ends inside an element header")
        vr = bytes(self._data[self.offset : self.offset + 2])
        if not vr.isalpha() or not vr.isupper():
            # Explicit VR announced, implicit VR found (some writers do this; pydicom copes too).
            return b"", self._unpack("I", 4)[0]
        self.offset += 2
        if vr in _LONG_VRS:
            self.offset += 2
            return vr, self._unpack("I", 4)[0]
        return vr, self._unpack("H", 2)[0]


def check_complete(path: str) -> None:
    """Raise :class:`Truncated` when the DICOM file at ``path`` ends before its structure does.

    Files without a File Meta header, or deflated ones (their structure is compressed), are not
    checked: pynetdicom always writes a File Meta header, naming the negotiated syntax.
    """
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size < 132:
            raise Truncated("shorter than a DICOM file header")
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[128:132] != b"DICM":
                return
            meta = _Walker(data, implicit=False, little=True)
            meta.offset = 132
            syntax = _meta_transfer_syntax(meta, data)
            if syntax == _DEFLATED:
                return
            walker = _Walker(data, implicit=syntax == _IMPLICIT_LE, little=syntax != _EXPLICIT_BE)
            walker.offset = meta.offset
            walker.elements(size)


def _meta_transfer_syntax(walker: _Walker, data: mmap.mmap) -> str:
    """Read the File Meta group (explicit VR little endian), leaving ``walker`` at the dataset."""
    syntax = _IMPLICIT_LE
    while walker.offset + 2 <= len(data):
        (group,) = struct.unpack_from("<H", data, walker.offset)
        if group != _META_GROUP:
            break
        tag = walker._tag()
        _vr, length = walker._length(tag)
        if tag == 0x00020010:
            value = bytes(data[walker.offset : walker.offset + length])
            syntax = value.decode("ascii", "replace").strip("\x00 ")
        walker._skip(length, len(data))
    return syntax
