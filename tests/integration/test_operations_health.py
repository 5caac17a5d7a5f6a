"""Readiness, start-up failures and file permissions, against real disks and file systems.

The file systems are real: a small tmpfs filled by the test, an ext4 image whose journal WAL is
made immutable (root ignores file modes, not the immutable flag), a read-only mount.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ListenerFactory
from tests.modality import Modality, make_study
from tests.support import AmqpTopology, http_get

_MB = 1024 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def tmpfs(where: Path, *, size_mb: int, options: str = "") -> Iterator[Path]:
    """A tmpfs of ``size_mb`` mounted at ``where`` for the block; unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m{options}", "tmpfs", str(where))
    try:
        yield where
    finally:
        _unmount(where)


@contextlib.contextmanager
def ext4_image(where: Path, *, size_mb: int) -> Iterator[Path]:
    """An ext4 file system in a loop-mounted image file (it supports the immutable flag)."""
    image = where.with_suffix(".img")
    with open(image, "wb") as handle:
        handle.truncate(size_mb * _MB)
    _run("mkfs.ext4", "-q", "-m", "0", str(image))
    where.mkdir(parents=True, exist_ok=True)
    _run("mount", "-o", "loop", str(image), str(where))
    try:
        yield where
    finally:
        _unmount(where)
        image.unlink()


def _unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True, timeout=60).returncode:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=60)


def _fill(disk: Path, *, leave_mb: int) -> Path:
    """Write a file that leaves about ``leave_mb`` free on ``disk``."""
    filler = disk / "filler"
    size = shutil.disk_usage(disk).free - leave_mb * _MB
    with open(filler, "wb") as handle:
        handle.truncate(0)
        for _ in range(size // _MB):
            handle.write(b"\0" * _MB)
    return filler


def _fill_completely(disk: Path) -> None:
    """Write until the file system has no block left."""
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, b"\0" * 4096)
    finally:
        os.close(descriptor)
    assert shutil.disk_usage(disk).free == 0


def test_readyz_is_503_below_the_disk_reserve_and_200_once_space_is_freed(
    tmp_path: Path, start_listener: ListenerFactory
) -> None:
    """Free space under storage.min_free_mb makes /readyz 503 naming it; freeing space heals."""
    with tmpfs(tmp_path / "disk", size_mb=48) as disk:
        listener = start_listener(data_dir=disk / "data", LISTENER_STORAGE__MIN_FREE_MB="16")
        try:
            readyz = f"{listener.metrics_url}/readyz"
            assert http_get(readyz) == (200, "ready\n")

            filler = _fill(disk, leave_mb=8)
            status, body = http_get(readyz)
            assert status == 503
            assert "disk below storage.min_free_mb" in body
            assert "16 MB required" in body

            filler.unlink()
            assert http_get(readyz) == (200, "ready\n")
        finally:
            listener.kill()


def test_readyz_is_503_while_the_journal_cannot_be_written_and_200_after(
    tmp_path: Path, start_listener: ListenerFactory
) -> None:
    """An immutable journal WAL (writes fail with EPERM) makes /readyz 503; lifting it heals."""
    with ext4_image(tmp_path / "disk", size_mb=32) as disk:
        data_dir = disk / "data"
        listener = start_listener(data_dir=data_dir, LISTENER_STORAGE__MIN_FREE_MB="1")
        wal = data_dir / "journal.sqlite3-wal"
        try:
            readyz = f"{listener.metrics_url}/readyz"
            assert http_get(readyz) == (200, "ready\n")

            _run("chattr", "+i", str(wal))
            status, body = http_get(readyz)
            assert status == 503
            assert "journal not writable" in body

            _run("chattr", "-i", str(wal))
            assert http_get(readyz) == (200, "ready\n")
        finally:
            subprocess.run(["chattr", "-i", str(wal)], capture_output=True, timeout=60)
            listener.kill()


def test_starting_on_a_full_disk_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    """With no space for the journal, run exits 1 with one line naming it, and no traceback."""
    with tmpfs(tmp_path / "disk", size_mb=1) as disk:
        _fill_completely(disk)
        environment = {
            **os.environ,
            "LISTENER_STORAGE__DATA_DIR": str(disk / "data"),
            "LISTENER_METRICS__ENABLED": "false",
            "LISTENER_DICOM__HOST": "127.0.0.1",
            "LISTENER_DICOM__PORT": "1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "listener", "run"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert output.strip().count("\n") == 0, output
    assert "cannot start: database or disk is full" in output
    assert f"storage.data_dir {disk / 'data'}: 0 MB free" in output


def _modes(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(path.relative_to(root)): ("dir" if path.is_dir() else "file", path.stat().st_mode)
        for path in root.rglob("*")
    }


def test_data_files_are_private_even_under_a_permissive_umask(
    tmp_path: Path, start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Under umask 000 the data dir is 0700 and the journal, -wal, -shm and every file 0600."""
    previous = os.umask(0)  # inherited by the listener process
    try:
        listener = start_listener(quiet_period=0.3)
    finally:
        os.umask(previous)
    Modality(listener.port).send_all(make_study(2, series=1))
    amqp.drain(1, timeout=20)
    data_dir = listener.data_dir

    modes = _modes(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert {"journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"} <= modes.keys()
    stored = [name for name, (kind, _) in modes.items() if name.startswith("instances/")]
    assert sum(name.endswith(".dcm") for name in stored) == 2  # spool files wait elsewhere
    for name, (kind, mode) in modes.items():
        assert stat.S_IMODE(mode) == (0o700 if kind == "dir" else 0o600), (name, oct(mode))


def test_an_older_permissive_data_dir_is_tightened_at_start(
    tmp_path: Path, start_listener: ListenerFactory
) -> None:
    """A data dir left 0755 with a 0644 journal by an older release becomes 0700 and 0600."""
    data_dir = tmp_path / "old-data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    journal = data_dir / "journal.sqlite3"
    journal.touch()
    journal.chmod(0o644)

    start_listener(data_dir=data_dir)

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
