"""Is a received DICOM file whole? A structural walk of its element lengths.

pydicom reads a truncated dataset silently (short values, missing elements), and the header reader
stops before the pixel data anyway. This walk follows every element's declared length, sequences
and encapsulated fragments included, and reports a file that ends before its structure does.

The same pass copies out the raw values of the few top-level elements the header reader asks
for, so that a well-formed file is parsed once, not twice (listener.header builds its dataset
from them). Values are never decoded here. A deflated dataset is walked the same way over its
inflation, streamed in small chunks (:mod:`listener.inflate`) and held to a size limit.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from listener.dicom_codes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from listener.inflate import DeflateError, InflatedStream, TooLarge

__all__ = ["DEFLATED", "RawValue", "Scan", "TooLarge", "Truncated", "locate", "scan"]

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
# Every other VR has a 2-byte length; VRs not listed here take the element-by-element walk.
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_EXPLICIT_LE_HEAD = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
_IMPLICIT_LE_HEAD = struct.Struct("<HHI")  # group, element, 4-byte length
_LE_LENGTH = struct.Struct("<I")
_IMPLICIT_LE, _EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
DEFLATED = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
_MAX_DEPTH = 32
# A wanted value larger than this is not copied: the header reader parses such a file itself.
_MAX_COPIED_VALUE = 1024 * 1024
_SEQUENCE_DELIMITER_SIZE = 8
_PREAMBLE_AND_PREFIX = 132


class Truncated(Exception):
    """The file ends, or is malformed, before its declared structure does."""


@dataclass(frozen=True, slots=True)
class RawValue:
    """A top-level element's encoded value as found in the (inflated) dataset."""

    vr: str | None  # None: implicit VR (from the dictionary)
    offset: int  # of the value in the file (in the inflated dataset, when deflated)
    value: bytes  # an undefined-length sequence's items, without its delimiter


@dataclass
class Scan:
    """What the walk found. ``elements`` is only complete when ``usable``."""

    transfer_syntax: str = ""
    implicit: bool = True
    little: bool = True
    usable: bool = False  # False: not walked (no File Meta) or unusual encoding
    elements: dict[int, RawValue] = field(default_factory=dict)
    dataset_offset: int = 0  # where the dataset starts in the file (after the File Meta)


class _Reader(Protocol):
    """Bytes read forward, from a mapped file or an inflating stream."""

    def tell(self) -> int: ...
    def take(self, count: int) -> bytes: ...
    def peek(self, count: int) -> bytes: ...
    def skip(self, count: int) -> None: ...
    def more(self) -> bool: ...
    def hold(self, *, most: int) -> None: ...
    def release(self) -> bytes | None: ...


class _Mapped:
    """A memory-mapped file read by offset."""

    def __init__(self, data: mmap.mmap, offset: int) -> None:
        self._data, self._size, self._offset = data, len(data), offset
        self._held: tuple[int, int] | None = None

    def tell(self) -> int:
        return self._offset

    def take(self, count: int) -> bytes:
        if self._offset + count > self._size:
            raise Truncated("file ends inside an element")
        self._offset += count
        return self._data[self._offset - count : self._offset]

    def peek(self, count: int) -> bytes:
        return self._data[self._offset : self._offset + count]

    def skip(self, count: int) -> None:
        if self._offset + count > self._size:
            raise Truncated("a value runs past the end of its container")
        self._offset += count

    def more(self) -> bool:
        return self._offset < self._size

    def skip_plain(self, *, implicit: bool, wanted: frozenset[int]) -> None:
        """Walk past little-endian elements the walk would only skip, stopping at any other.

        Plain: a known VR, a defined length that stays inside the file, not wanted, not an item
        or delimiter. The element-by-element walk takes over at the first one that is not: it
        gives the same result, this is only faster (most of a header is plain elements).
        """
        data, size, offset = self._data, self._size, self._offset
        while offset + 8 <= size:
            if implicit:
                group, element, length = _IMPLICIT_LE_HEAD.unpack_from(data, offset)
                start = offset + 8
            else:
                group, element, vr, length = _EXPLICIT_LE_HEAD.unpack_from(data, offset)
                if vr in _SHORT_VRS:
                    start = offset + 8
                elif vr in _LONG_VRS and offset + 12 <= size:
                    (length,) = _LE_LENGTH.unpack_from(data, offset + 8)
                    start = offset + 12
                else:
                    break
            if group == 0xFFFE or length == _UNDEFINED or (group << 16 | element) in wanted:
                break
            if start + length > size:
                break
            offset = start + length
        self._offset = offset

    def hold(self, *, most: int) -> None:
        self._held = (self._offset, most)

    def release(self) -> bytes | None:
        (start, most), self._held = self._held or (self._offset, 0), None
        return None if self._offset - start > most else self._data[start : self._offset]


class _Walker:
    """Follows element headers through a dataset, copying wanted top-level values."""

    def __init__(
        self,
        reader: _Reader,
        *,
        implicit: bool,
        little: bool,
        wanted: frozenset[int] = frozenset(),
    ) -> None:
        self._reader = reader
        self._implicit = implicit
        self._order = "<" if little else ">"
        self._wanted = wanted
        self._skimmer = reader if little and isinstance(reader, _Mapped) else None
        self.found: dict[int, RawValue] = {}
        self.unusual = False  # an encoding pydicom reads differently from a plain walk

    def _unpack(self, fmt: str, count: int) -> tuple[int, ...]:
        return struct.unpack(self._order + fmt, self._reader.take(count))

    def _tag(self) -> int:
        group, element = self._unpack("HH", 4)
        return int(group << 16 | element)

    def elements(self, depth: int = 0, *, until_item_end: bool = False) -> None:
        """Walk elements to the end of the data (or an item delimiter when ``until_item_end``)."""
        if depth > _MAX_DEPTH:
            raise Truncated("sequences nested too deep")
        skimmer, nothing = self._skimmer, frozenset[int]()
        while self._reader.more():
            if skimmer is not None:
                skimmer.skip_plain(
                    implicit=self._implicit, wanted=self._wanted if depth == 0 else nothing
                )
                if not skimmer.more():
                    break
            tag = self._tag()
            if tag == _ITEM_END and until_item_end:
                self._unpack("I", 4)
                return
            vr, length = self._length(tag)
            if depth == 0 and tag in self._wanted:
                self._copy(tag, vr, length)
            else:
                self._value(vr, length, depth)
            if depth == 0 and vr == b"" and not self._implicit:
                self.unusual = True  # pydicom then reads the whole dataset as implicit VR
        if until_item_end:
            raise Truncated("item without its delimiter")

    def _value(self, vr: bytes, length: int, depth: int) -> None:
        """Walk past one element's value."""
        if length != _UNDEFINED:
            self._reader.skip(length)
        elif vr == b"UN" and not self._implicit:
            # PS3.5 6.2.2: an undefined-length UN holds implicit VR little endian items.
            _Walker(self._reader, implicit=True, little=True).items(depth + 1)
        else:
            self.items(depth + 1)

    def _copy(self, tag: int, vr: bytes, length: int) -> None:
        """Walk past a wanted element's value, keeping it (an undefined-length one must be SQ)."""
        start = self._reader.tell()
        if length == _UNDEFINED and vr in (b"", b"SQ"):
            self._reader.hold(most=_MAX_COPIED_VALUE + _SEQUENCE_DELIMITER_SIZE)
            self.items(1)
            held = self._reader.release()
            vr, value = b"SQ", None if held is None else held[:-_SEQUENCE_DELIMITER_SIZE]
        elif length != _UNDEFINED and length <= _MAX_COPIED_VALUE:
            value = self._reader.take(length)
        else:
            self._value(vr, length, 0)
            value = None
        if value is None:
            self.unusual = True
            return
        name = vr.decode("ascii") if vr else None
        self.found[tag] = RawValue(name, start, value)

    def items(self, depth: int) -> None:
        """Walk items (sequence items or encapsulated fragments) up to the sequence delimiter."""
        while True:
            if not self._reader.more():
                raise Truncated("sequence without its delimiter")
            tag = self._tag()
            (length,) = self._unpack("I", 4)
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM:
                raise Truncated("expected an item inside a sequence")
            if length == _UNDEFINED:
                self.elements(depth, until_item_end=True)
            else:
                self._reader.skip(length)

    def _length(self, tag: int) -> tuple[bytes, int]:
        """The element's VR (b"" when implicit) and value length."""
        if self._implicit or tag >> 16 == 0xFFFE:
            return b"", self._unpack("I", 4)[0]
        vr = self._reader.peek(2)
        if len(vr) < 2:
            raise Truncated("file ends inside an element header")
        if not vr.isalpha() or not vr.isupper():
            # Explicit VR announced, implicit VR found (some writers do this; pydicom copes too).
            return b"", self._unpack("I", 4)[0]
        self._reader.skip(2)
        if vr in _LONG_VRS:
            self._reader.skip(2)
            return vr, self._unpack("I", 4)[0]
        return vr, self._unpack("H", 2)[0]

    def meta_transfer_syntax(self) -> str:
        """Read the File Meta group (explicit VR little endian), stopping at the dataset.

        "" when the group names no transfer syntax (the dataset is then walked as implicit VR).
        """
        syntax = ""
        while (
            len(start := self._reader.peek(2)) == 2 and struct.unpack("<H", start)[0] == _META_GROUP
        ):
            tag = self._tag()
            _vr, length = self._length(tag)
            if tag == 0x00020010:
                value = self._reader.take(length)
                syntax = value.decode("ascii", "replace").strip("\x00 ")
            else:
                self._reader.skip(length)
        return syntax


def locate(path: str) -> Scan:
    """The file's transfer syntax and where its dataset starts, not walked (``usable`` False).

    An empty Scan for a file without (or with a broken) File Meta header.
    """
    try:
        with open(path, "rb") as stream, _mapped(stream) as data:
            if data[128:_PREAMBLE_AND_PREFIX] != b"DICM":
                return Scan()
            reader = _Mapped(data, _PREAMBLE_AND_PREFIX)
            syntax = _Walker(reader, implicit=False, little=True).meta_transfer_syntax()
            return Scan(transfer_syntax=syntax, dataset_offset=reader.tell())
    except (Truncated, ValueError, OSError):
        return Scan()


def scan(
    path: str, wanted: frozenset[int] = frozenset(), *, max_inflated: int | None = None
) -> Scan:
    """Walk the DICOM file at ``path``; raise :class:`Truncated` if it ends before its structure.

    The result carries the raw values of the ``wanted`` top-level tags. Files without a File
    Meta header are not walked (``usable`` False): pynetdicom always writes a File Meta header,
    naming the negotiated syntax. A deflated dataset is walked as it inflates; it raises
    :class:`TooLarge` once more than ``max_inflated`` bytes have come out.
    """
    with open(path, "rb") as stream:
        if os.fstat(stream.fileno()).st_size < _PREAMBLE_AND_PREFIX:
            raise Truncated("shorter than a DICOM file header")
        with _mapped(stream) as data:
            if data[128:_PREAMBLE_AND_PREFIX] != b"DICM":
                return Scan()
            reader = _Mapped(data, _PREAMBLE_AND_PREFIX)
            syntax = _Walker(reader, implicit=False, little=True).meta_transfer_syntax()
            start = reader.tell()
            if syntax != DEFLATED:
                return _walk(reader, syntax, start, wanted)
            try:
                inflated = InflatedStream(stream, start, limit=max_inflated)
                return _walk(inflated, syntax, start, wanted)
            except DeflateError as exc:
                raise Truncated(str(exc)) from None


def _walk(reader: _Reader, syntax: str, start: int, wanted: frozenset[int]) -> Scan:
    """Walk the dataset ``reader`` is at, encoded in ``syntax``."""
    implicit, little = (syntax or _IMPLICIT_LE) == _IMPLICIT_LE, syntax != _EXPLICIT_BE
    walker = _Walker(reader, implicit=implicit, little=little, wanted=wanted)
    walker.elements()
    usable = bool(syntax) and not walker.unusual
    return Scan(syntax, implicit, little, usable, walker.found, start)


def _mapped(stream: BinaryIO) -> mmap.mmap:
    """The whole file, memory-mapped read-only."""
    return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
