"""SpoolFile: a refused spool file is gone at once; the outcome says how to answer the C-STORE."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.model import StoreOutcome
from listener.scp.spool import SpoolFile

HEADER = b"\0" * 128 + b"DICM"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path)], check=True)
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], check=False)


def test_disk_full_refuses_out_of_resources_and_removes_the_file(tiny_disk: Path) -> None:
    """ENOSPC while writing answers 0xA700's outcome and leaves no file."""
    spool = SpoolFile(tiny_disk, meta=HEADER, max_bytes=1 << 30, min_free=0)
    outcomes = [spool.write(b"x" * 65536) for _ in range(20)]

    assert StoreOutcome.OUT_OF_RESOURCES in outcomes
    assert "errno 28" in spool.error
    assert list(tiny_disk.iterdir()) == []


def test_reserve_refuses_before_the_disk_fills(tiny_disk: Path) -> None:
    """With a reserve, the write that would cross it is refused and nothing is left."""
    spool = SpoolFile(tiny_disk, meta=HEADER, max_bytes=1 << 30, min_free=512 * 1024)
    outcomes = [spool.write(b"x" * 65536) for _ in range(20)]

    assert StoreOutcome.OUT_OF_RESOURCES in outcomes
    assert "min_free_mb" in spool.error
    assert list(tiny_disk.iterdir()) == []


def test_other_write_error_is_a_processing_failure(tmp_path: Path) -> None:
    """A write error other than a full disk (here EBADF) answers 0x0110's outcome; no file left."""
    spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=1 << 30, min_free=0)
    assert spool.write(b"x" * 100) is None
    assert spool._fd is not None
    os.close(spool._fd)  # the descriptor fails under the writer, as a broken device would

    assert spool.write(b"x" * 100) is StoreOutcome.FAILED
    assert list(tmp_path.iterdir()) == []


def test_size_limit_stops_writing_at_once(tmp_path: Path) -> None:
    """The write that passes max_bytes is refused; the file is gone, nothing past it written."""
    spool = SpoolFile(tmp_path, meta=HEADER, max_bytes=10_000, min_free=0)

    assert spool.write(b"x" * 9000) is None
    assert spool.write(b"x" * 9000) is StoreOutcome.TOO_LARGE
    assert list(tmp_path.iterdir()) == []
