"""A deflated dataset (Deflated Explicit VR Little Endian), inflated as read, in bounded memory.

A deflated dataset can inflate a thousandfold (a few hundred KB to gigabytes of zeros), so it is
never inflated whole: bytes are produced in small chunks as the reader asks for them, skipped
values are inflated and dropped, and the total inflated so far is held against a limit. The
structural walk (listener.scan) and pydicom (:func:`inflated_dataset`) both read it so.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO, cast

from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset

_INPUT_CHUNK = 64 * 1024
_OUTPUT_CHUNK = 256 * 1024
# Bytes kept behind the read position, so pydicom's short rewinds (a peeked tag, an element it
# stops before) need no fresh inflation from the start.
_LOOKBACK = 256
_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double, plain


class DeflateError(Exception):
    """The deflate stream is corrupt or cut short, or the dataset ends inside an element."""


class TooLarge(Exception):
    """The dataset inflates to more than the limit."""


class InflatedStream:
    """Inflated bytes of the raw deflate stream starting at ``start`` in ``file``.

    A read-only, seekable file-like (``read``, ``seek``, ``tell``), so pydicom can parse it too:
    seeking forward inflates and drops, seeking back past the kept window inflates again from the
    start. :meth:`hold` keeps every byte from the position on, for a value that must be copied.
    """

    def __init__(self, file: BinaryIO, start: int, *, limit: int | None = None) -> None:
        self._file = file
        self._start = start
        self._limit = limit
        self._rewind()

    def _rewind(self) -> None:
        self._file.seek(self._start)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._window = bytearray()  # inflated bytes from _window_start to _produced
        self._window_start = 0
        self._produced = 0
        self._position = 0
        self._held: int | None = None
        self._hold_most = 0

    def tell(self) -> int:
        """The read position in the inflated dataset."""
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position (fewer only at the end of the stream)."""
        data = self.peek(size)
        self._position += len(data)
        return data

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the position (all that is left if negative), not moving it."""
        end = self._position + size if size >= 0 else None
        if end is None or end > self._produced:
            self._fill(end)
        begin = self._position - self._window_start
        return bytes(self._window[begin : None if end is None else end - self._window_start])

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the position (whence 0: from the start, 1: from here); never past the end."""
        target = offset + (self._position if whence == 1 else 0)
        if whence not in (0, 1) or target < 0:
            raise ValueError("an inflated stream seeks from its start or its position only")
        if target < self._window_start:
            self._rewind()
        self._position = target
        if target > self._produced:
            self._fill(target)
            self._position = min(target, self._produced)
        return self._position

    def take(self, size: int) -> bytes:
        """Exactly ``size`` bytes from the position."""
        data = self.read(size)
        if len(data) < size:
            raise DeflateError("the dataset ends inside an element")
        return data

    def skip(self, size: int) -> None:
        """Move ``size`` bytes on, all of them there."""
        target = self._position + size
        if self.seek(target) < target:
            raise DeflateError("a value runs past the end of the dataset")

    def more(self) -> bool:
        """True until every byte has been read."""
        return not self.at_end()

    def at_end(self) -> bool:
        """True when every byte has been read (the deflate stream is complete)."""
        if self._position < self._produced:
            return False
        self._fill(self._position + 1)
        return self._position >= self._produced

    def hold(self, *, most: int) -> None:
        """Keep the bytes from the position on, up to ``most`` of them, until :meth:`release`."""
        self._held, self._hold_most = self._position, most

    def release(self) -> bytes | None:
        """The bytes read since :meth:`hold`; None when they were more than it could keep."""
        start, self._held = self._held, None
        if start is None or start < self._window_start or self._position - start > self._hold_most:
            return None
        return bytes(self._window[start - self._window_start : self._position - self._window_start])

    def _fill(self, end: int | None) -> None:
        """Inflate until ``end`` (None: everything) is inside the window or the stream ends."""
        while (end is None or self._produced < end) and self._more_inflated():
            pass

    def _more_inflated(self) -> bool:
        """Inflate one more chunk into the window, dropping what nobody needs; False at the end."""
        chunk = self._inflate()
        if not chunk:
            return False
        if self._held is not None and self._produced + len(chunk) - self._held > self._hold_most:
            self._held = None  # more than it may keep: release() will say so
        keep = max(self._position - _LOOKBACK, self._window_start)
        if self._held is not None:
            keep = min(keep, self._held)
        if keep >= self._produced:
            dropped = min(keep - self._produced, len(chunk))
            self._window = bytearray(chunk[dropped:])
            self._window_start = self._produced + dropped
        else:
            del self._window[: keep - self._window_start]
            self._window += chunk
            self._window_start = keep
        self._produced += len(chunk)
        return True

    def _inflate(self) -> bytes:
        """The next inflated chunk; b"" once the deflate stream has ended."""
        inflater = self._inflater
        while not inflater.eof:
            data = inflater.unconsumed_tail or self._file.read(_INPUT_CHUNK)
            if not data:
                raise DeflateError("the file ends inside its deflate stream")
            try:
                chunk = inflater.decompress(data, _OUTPUT_CHUNK)
            except zlib.error:
                raise DeflateError("corrupt deflate stream") from None
            if chunk:
                if self._limit is not None and self._produced + len(chunk) > self._limit:
                    raise TooLarge(f"inflates to more than {self._limit} bytes")
                return chunk
        return b""


def inflated_dataset(file: BinaryIO, start: int, defer_size: int) -> Dataset:
    """The deflated dataset at ``start`` in ``file``, parsed by pydicom as dcmread would, streamed.

    It stops before the pixel data; values over ``defer_size`` are read from the stream (so from
    ``file``, which must stay open) when first used.
    """
    stream = cast(BinaryIO, InflatedStream(file, start))  # read, seek and tell: all pydicom uses
    dataset = read_dataset(
        stream,
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=lambda tag, _vr, _length: tag in _PIXEL_DATA_TAGS,
        defer_size=defer_size,
    )
    parsed = FileDataset(stream, dataset, is_implicit_VR=False, is_little_endian=True)
    parsed.set_original_encoding(False, True, dataset.original_character_set)
    return parsed
