"""Is a received DICOM file whole? A structural walk of its element lengths.

pydicom reads a truncated dataset silently (short values, missing elements), and the header reader
stops before the pixel data anyway. This walk follows every element's declared length, sequences
and encapsulated fragments included, and reports a file that ends before its structure does.

The same pass copies out the raw values of the few top-level elements the header reader asks
for, so that a well-formed file is parsed once, not twice (listener.header builds its dataset
from them). Values are never decoded here.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field

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
# A wanted value larger than this is not copied: the header reader parses such a file itself.
_MAX_COPIED_VALUE = 1024 * 1024
_SEQUENCE_DELIMITER_SIZE = 8


class Truncated(Exception):
    """The file ends, or is malformed, before its declared structure does."""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A top-level element's encoded value as found in the file."""

    vr: str | None  # None: implicit VR (from the dictionary)
    offset: int  # of the value in the file
    value: bytes  # an undefined-length sequence's items, without its delimiter


@dataclass
class Scan:
    """What the walk found. ``elements`` is only complete when ``usable``."""

    transfer_syntax: str = ""
    implicit: bool = True
    little: bool = True
    usable: bool = False  # False: not walked (no File Meta, deflated) or unusual encoding
    elements: dict[int, RawValue] = field(default_factory=dict)


class _Walker:
    """Follows element headers through a memory-mapped file by offset, copying wanted values."""

    def __init__(
        self,
        data: mmap.mmap,
        *,
        implicit: bool,
        little: bool,
        wanted: frozenset[int] = frozenset(),
    ) -> None:
        self._data = data
        self._size = len(data)
        self._implicit = implicit
        self._order = "<" if little else ">"
        self._wanted = wanted
        self.offset = 0
        self.found: dict[int, RawValue] = {}
        self.unusual = False  # an encoding pydicom reads differently from a plain walk

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
            start = self.offset
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
            if depth == 0:
                if vr == b"" and not self._implicit:
                    self.unusual = True  # pydicom then reads the whole dataset as implicit VR
                if tag in self._wanted:
                    self._copy(tag, vr, start, length)
        if until_item_end:
            raise Truncated("item without its delimiter")

    def _copy(self, tag: int, vr: bytes, start: int, length: int) -> None:
        """Keep a wanted element's raw value (an undefined-length one must be a sequence)."""
        if length == _UNDEFINED:
            if vr not in (b"", b"SQ"):
                self.unusual = True
                return
            vr, stop = b"SQ", self.offset - _SEQUENCE_DELIMITER_SIZE
        else:
            stop = start + length
        if stop - start > _MAX_COPIED_VALUE:
            self.unusual = True
            return
        name = vr.decode("ascii") if vr else None
        self.found[tag] = RawValue(name, start, bytes(self._data[start:stop]))

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


def scan(path: str, wanted: frozenset[int] = frozenset()) -> Scan:
    """Walk the DICOM file at ``path``; raise :class:`Truncated` if it ends before its structure.

    The result carries the raw values of the ``wanted`` top-level tags. Files without a File
    Meta header, or deflated ones (their structure is compressed), are not walked (``usable``
    False): pynetdicom always writes a File Meta header, naming the negotiated syntax.
    """
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if size < 132:
            raise Truncated("shorter than a DICOM file header")
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[128:132] != b"DICM":
                return Scan()
            meta = _Walker(data, implicit=False, little=True)
            meta.offset = 132
            syntax = _meta_transfer_syntax(meta, data)
            if syntax == _DEFLATED:
                return Scan(transfer_syntax=syntax)
            implicit, little = (syntax or _IMPLICIT_LE) == _IMPLICIT_LE, syntax != _EXPLICIT_BE
            walker = _Walker(data, implicit=implicit, little=little, wanted=wanted)
            walker.offset = meta.offset
            walker.elements(size)
            usable = bool(syntax) and not walker.unusual
            return Scan(syntax, implicit, little, usable, walker.found)


def _meta_transfer_syntax(walker: _Walker, data: mmap.mmap) -> str:
    """Read the File Meta group (explicit VR little endian), leaving ``walker`` at the dataset.

    "" when the group names no transfer syntax (the dataset is then walked as implicit VR).
    """
    syntax = ""
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
