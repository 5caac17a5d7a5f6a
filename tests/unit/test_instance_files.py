"""Instance files on disk: placed durably, found again at start, removed by retention."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from listener.instance_files import InstanceFiles
from listener.model import InstanceRecord


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
