"""Journal states the receive path and MPPS rely on, beyond tests/unit/test_journal.py."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest

from listener.journal import Journal, JournalError
from tests.conftest import JournalOpener
from tests.unit.test_journal import RECORD, message


def test_a_reopened_study_left_empty_goes_back_to_published(open_journal: JournalOpener) -> None:
    """Re-opened by a changed instance that then moves away: published again, version kept."""
    journal = open_journal()
    journal.add_instance(RECORD, 1.0)
    journal.finish_study("1.2", digest="d", message=message("1.2", 1), finished_at=2.0)
    assert journal.add_instance(replace(RECORD, instance_number=2), 3.0).reopened == ("1.2",)

    result = journal.add_instance(replace(RECORD, study_uid="7.7"), 4.0)

    assert result.emptied == ("1.2",)
    row = journal.study("1.2")
    assert row is not None and (row.state, row.version) == ("published", 1)
    assert [row.study_uid for row in journal.pending_studies()] == ["7.7"]


def test_procedure_steps_of_a_study_come_back_in_update_order(open_journal: JournalOpener) -> None:
    """Every MPPS state saved for a study is returned as saved, oldest update first."""
    journal = open_journal()
    first = {"sop_instance_uid": "5.1", "study_uid": "1.2", "status": "IN PROGRESS"}
    second = {"sop_instance_uid": "5.2", "study_uid": "1.2", "status": "COMPLETED"}
    other = {"sop_instance_uid": "5.3", "study_uid": "9.9", "status": "IN PROGRESS"}
    journal.save_procedure_step(second, {"x": 2}, now=20.0)
    journal.save_procedure_step(first, {"x": 1}, now=10.0)
    journal.save_procedure_step(other, {}, now=15.0)

    assert journal.procedure_steps("1.2") == [first, second]
    assert journal.procedure_step("5.2") == (second, {"x": 2})


def test_an_unknown_procedure_step_is_none(open_journal: JournalOpener) -> None:
    """Asking for an MPPS the journal never saw gives None, not an error."""
    assert open_journal().procedure_step("5.9") is None


@pytest.mark.parametrize(("error", "full"), [(errno.ENOSPC, True), (errno.EIO, False)])
def test_a_failed_wal_fsync_is_a_journal_error_saying_whether_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, full: bool
) -> None:
    """A WAL fsync failing with ENOSPC is 'full' (0xA700 upstream); any other error is not."""
    journal = Journal(tmp_path / "j.sqlite3")
    sequence = journal.add_instance(RECORD, 1.0).sequence

    def failing_fsync(_descriptor: int) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "fdatasync", failing_fsync)
    with pytest.raises(JournalError, match="journal sync failed") as raised:
        journal.make_durable(sequence)
    assert raised.value.full is full
