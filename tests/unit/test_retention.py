"""Retention on several nodes: each removes its own files, whichever node pruned the records."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from listener.config import StorageSettings
from listener.instance_files import InstanceFiles
from listener.journal_api import JournalStore
from listener.retention import Retention, _load_marks, _save_marks
from tests.conftest import JournalOpener
from tests.unit.test_journal import RECORD, message

DAY = 86_400.0


def node(tmp_path: Path, name: str, journal: JournalStore) -> tuple[Retention, Path]:
    """A node's retention over its own data directory, on the shared journal."""
    data_dir = tmp_path / name
    settings = StorageSettings(data_dir=data_dir, study_retention_days=1.0)
    files = InstanceFiles(data_dir / "instances", keep=True, min_free_mb=0, node=name)
    return Retention(settings, journal=journal, files=files), data_dir / "instances"


def write_file(root: Path, sop_instance_uid: str) -> Path:
    path = root / "1.2" / "1.2.1" / f"{sop_instance_uid}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DICM")
    return path


def test_a_node_removes_its_files_of_a_study_another_node_pruned(
    open_journal: JournalOpener, tmp_path: Path
) -> None:
    """Node A prunes the records; node B still finds the study and deletes its own files."""
    journal = open_journal()
    (retention_a, root_a), (retention_b, root_b) = (
        node(tmp_path, "a", journal),
        node(tmp_path, "b", journal),
    )
    journal.add_instance(replace(RECORD, node="a"), 1.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2", node="b"), 1.0)
    on_a, on_b = write_file(root_a, "1.2.1.1"), write_file(root_b, "1.2.1.2")
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)

    retention_a.apply(2.0 + 2 * DAY)
    assert not on_a.exists() and on_b.exists()
    row = journal.study("1.2")
    assert row is not None and row.state == "pruned"

    retention_b.apply(2.0 + 2 * DAY)
    assert not on_b.exists()


def test_a_pass_goes_on_from_its_mark_and_skips_pending_studies(
    open_journal: JournalOpener, tmp_path: Path
) -> None:
    """A study pending again when its turn comes keeps its files; the next pass does not redo."""
    journal = open_journal()
    retention, root = node(tmp_path, "a", journal)
    journal.add_instance(replace(RECORD, node="a"), 1.0)
    kept = write_file(root, "1.2.1.1")
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)
    journal.add_instance(replace(RECORD, sop_instance_uid="1.2.1.2", node="a"), 3.0)  # re-opened

    retention.apply(2.0 + 2 * DAY)

    assert kept.exists()
    assert (root.parent / "retention-marks.json").exists()


def test_workers_saving_their_marks_at_once_do_not_fail(tmp_path: Path) -> None:
    """Workers of one host saving the shared marks at once never take one another's temp file."""
    marks_path = tmp_path / "retention-marks.json"
    failures: list[BaseException] = []

    def save_often(worker: int) -> None:
        try:
            for step in range(300):
                _save_marks(marks_path, {"files": (float(step), f"w{worker}"), "records": (0, "")})
        except OSError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=save_often, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert _load_marks(marks_path)["files"][0] == 299.0
    assert [p.name for p in tmp_path.iterdir()] == ["retention-marks.json"]
