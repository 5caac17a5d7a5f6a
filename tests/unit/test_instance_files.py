"""Instance files on disk: placed durably, found again at start, removed by retention."""

from __future__ import annotations

import errno
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from listener.instance_files import FREE_SPACE_READING_SECONDS, InstanceFiles
from listener.model import InstanceRecord

MiB = 1024 * 1024


def record(study: str = "1.2.3", series: str = "1.2.3.4", sop: str = "1.2.3.4.5") -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_uid=study,
        series_uid=series,
    )


def placed(tmp_path: Path, files: InstanceFiles, item: InstanceRecord) -> InstanceRecord:
    spooled = tmp_path / f"spool-{item.sop_instance_uid}.dcm"
    spooled.write_bytes(b"DICM" * 8)
    return files.place(spooled, item, size=32)


def test_a_placed_file_exists_until_it_is_removed(tmp_path: Path) -> None:
    """exists() is True for a placed file and False once the file is gone (checked at start)."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0)
    stored = placed(tmp_path, files, record())

    assert stored.file == "1.2.3/1.2.3.4/1.2.3.4.5.dcm" and stored.size == 32
    assert files.exists(stored)
    (tmp_path / "instances" / stored.file).unlink()
    assert not files.exists(stored)


def test_records_without_a_kept_file_count_as_present(tmp_path: Path) -> None:
    """With keep_instances off, or for a record that names no file, nothing is reported missing."""
    assert InstanceFiles(tmp_path / "a", keep=False, min_free_mb=0).exists(record())
    assert InstanceFiles(tmp_path / "b", keep=True, min_free_mb=0).exists(record())


def test_remove_study_deletes_its_files_and_says_how_many(tmp_path: Path) -> None:
    """Retention removes a study's directory and reports the number of files it deleted."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0)
    for sop in ("1.1", "1.2", "1.3"):
        placed(tmp_path, files, record(sop=sop))
    placed(tmp_path, files, record(study="9.9", sop="9.1"))

    assert files.remove_study("1.2.3") == 3
    assert not (tmp_path / "instances" / "1.2.3").exists()
    assert (tmp_path / "instances" / "9.9").is_dir()
    assert files.remove_study("1.2.3") == 0


def test_a_placed_record_names_the_node_that_holds_its_file(tmp_path: Path) -> None:
    """The record of a stored instance carries storage.node_name, kept file or not."""
    keeping = InstanceFiles(tmp_path / "kept", keep=True, min_free_mb=0, node="node-a")
    dropping = InstanceFiles(tmp_path / "dropped", keep=False, min_free_mb=0, node="node-b")

    assert placed(tmp_path, keeping, record(sop="1.1")).node == "node-a"
    assert placed(tmp_path, dropping, record(sop="1.2")).node == "node-b"


def test_a_record_naming_another_node_is_held_without_a_file_here(tmp_path: Path) -> None:
    """Storage commitment on node C trusts A's committed record; its own records need the file."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0, node="node-c")
    elsewhere = replace(record(), file="1.2.3/1.2.3.4/1.2.3.4.5.dcm", node="node-a")
    here_but_gone = replace(elsewhere, node="node-c")

    assert files.held(elsewhere)
    assert not files.held(here_but_gone)


class FakeDisk:
    """shutil.disk_usage stand-in: a settable free space, and how often it was read."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0

    def __call__(self, path: object) -> shutil._ntuple_diskusage:
        self.reads += 1
        return shutil._ntuple_diskusage(10 * self.free, 9 * self.free, self.free)


def reserve_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int
) -> tuple[InstanceFiles, FakeDisk, list[float]]:
    disk, now = FakeDisk(free), [100.0]
    monkeypatch.setattr(shutil, "disk_usage", disk)
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=1, clock=lambda: now[0])
    return files, disk, now


def test_one_reading_of_the_free_space_serves_the_checks_of_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """has_room reads the disk once, then again only once the reading is a second old."""
    files, disk, now = reserve_files(tmp_path, monkeypatch, free=MiB * 2)

    assert files.has_room() and files.has_room()
    assert disk.reads == 1
    disk.free = MiB // 2
    now[0] += FREE_SPACE_READING_SECONDS
    assert not files.has_room()
    assert disk.reads == 2


def test_files_placed_since_the_reading_count_against_the_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placing more than the headroom makes has_room refuse at once, before the next reading."""
    files, disk, _ = reserve_files(tmp_path, monkeypatch, free=MiB + 1000)
    assert files.has_room()

    spooled = tmp_path / "spool.dcm"
    spooled.write_bytes(b"DICM" * 8)
    files.place(spooled, record(), size=2000)

    assert not files.has_room()
    assert disk.reads == 1


def spool_file(tmp_path: Path, name: str) -> Path:
    spooled = tmp_path / name
    spooled.write_bytes(b"DICM" * 8)
    return spooled


def moved_before_the_wait(files: InstanceFiles, spooled: Path, *, fresh: bool) -> bool:
    """Place ``spooled``; whether it had left the spool when its data sync was waited for."""
    moved: list[bool] = []
    files.place(
        spooled, record(), size=32, synced=lambda: moved.append(not spooled.exists()), fresh=fresh
    )
    [answer] = moved
    return answer


def test_a_new_instances_name_is_made_durable_while_its_data_sync_runs(tmp_path: Path) -> None:
    """No record names the path yet: the file is moved in before the data sync is waited for."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0)

    assert moved_before_the_wait(files, spool_file(tmp_path, "new.dcm"), fresh=True)


def test_a_file_replacing_a_held_version_is_synced_before_it_is_moved_in(tmp_path: Path) -> None:
    """A record names that path: until the new data is on disk the old file must stay there."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0)
    placed(tmp_path, files, record())

    assert not moved_before_the_wait(files, spool_file(tmp_path, "changed.dcm"), fresh=False)


def test_a_new_instance_whose_data_sync_fails_leaves_no_file(tmp_path: Path) -> None:
    """Moved in beside its data sync, a file whose sync failed is removed again (not stored)."""
    files = InstanceFiles(tmp_path / "instances", keep=True, min_free_mb=0)
    spooled = spool_file(tmp_path, "new.dcm")

    def failed_sync() -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):
        files.place(spooled, record(), size=32, synced=failed_sync, fresh=True)

    assert not list((tmp_path / "instances").rglob("*.dcm"))
