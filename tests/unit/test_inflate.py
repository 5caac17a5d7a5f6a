"""The streamed inflation of a deflated dataset: a seekable reader in bounded memory."""

from __future__ import annotations

import io
import random
import zlib

import pytest

from listener.inflate import DeflateError, InflatedStream, TooLarge

_PREFIX = b"File Meta stand-in"


def deflated(data: bytes) -> io.BytesIO:
    """``data`` as a raw deflate stream after a prefix, as in a deflated DICOM file."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return io.BytesIO(_PREFIX + deflater.compress(data) + deflater.flush())


def test_reads_and_seeks_anywhere_give_the_inflated_bytes() -> None:
    """Any mix of reads, peeks and seeks, back and forth, sees exactly the inflated data."""
    rng = random.Random(7)
    data = rng.randbytes(300_000) + bytes(2_000_000) + rng.randbytes(50_000)
    stream = InflatedStream(deflated(data), len(_PREFIX))

    for _ in range(300):
        action, where = rng.choice(["read", "peek", "seek"]), rng.randrange(len(data) + 10)
        size = rng.choice([0, 1, 4, 8, 300, 70_000])
        if action == "seek":
            assert stream.seek(where) == min(where, len(data))
        elif action == "read":
            start = stream.tell()
            assert stream.read(size) == data[start : start + size]
        else:
            assert stream.peek(size) == data[stream.tell() : stream.tell() + size]

    stream.seek(0)
    assert stream.read() == data
    assert stream.at_end()


def test_more_than_the_limit_is_refused() -> None:
    """Inflating past the limit raises TooLarge, even while skipping."""
    stream = InflatedStream(deflated(bytes(5_000_000)), len(_PREFIX), limit=1_000_000)

    with pytest.raises(TooLarge):
        stream.seek(2_000_000)


def test_held_bytes_are_returned_up_to_their_bound() -> None:
    """A hold returns what was read since; past its bound, nothing (and nothing is kept)."""
    data = random.Random(3).randbytes(2_000_000)
    stream = InflatedStream(deflated(data), len(_PREFIX))
    stream.seek(10)

    stream.hold(most=1000)
    stream.read(600)
    assert stream.release() == data[10:610]
    stream.hold(most=1000)
    stream.seek(1_500_000)
    assert stream.release() is None


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_a_cut_deflate_stream_is_an_error(cut: float) -> None:
    """A deflate stream that stops before its end is reported, not taken as the end of data."""
    whole = deflated(random.Random(5).randbytes(200_000)).getvalue()
    stream = InflatedStream(io.BytesIO(whole[: int(len(whole) * cut)]), len(_PREFIX))

    with pytest.raises(DeflateError):
        stream.read()
