"""Operator commands that work on the journal: listing studies and republishing them.

They open the journal directly (SQLite allows a second process beside a running listener, and
PostgreSQL any number of clients); a
republished version goes to the outbox, which the running listener's publisher drains, or the
next start does.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable

from listener.aggregator import Aggregator
from listener.config import Settings
from listener.finisher import StudyFinisher, fhir_options
from listener.journal_api import JournalStore, StudySummary
from listener.journal_factory import journal_path
from listener.journal_factory import open_journal as _open


def open_journal(settings: Settings) -> JournalStore:
    """The listener's journal (PostgreSQL's when configured); an error if data_dir holds none."""
    path = journal_path(settings.storage)
    if not settings.storage.database_url and not path.exists():
        raise FileNotFoundError(f"no journal at {path}: check storage.data_dir")
    return _open(settings.storage)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def studies_table(rows: Iterable[StudySummary]) -> list[str]:
    """Rows as an aligned text table with a header line."""
    header = (
        "STUDY INSTANCE UID",
        "STATE",
        "VERSION",
        "SERIES",
        "INSTANCES",
        "LAST RECEIVED",
        "FINISHED",
    )
    lines = [
        (
            row.study_uid,
            row.state,
            str(row.version),
            str(row.series),
            str(row.instances),
            _when(row.last_received_at),
            _when(row.finished_at),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    ]


def republish(
    journal: JournalStore,
    settings: Settings,
    study_uids: list[str],
    *,
    report: Callable[[str], None],
    clock: Callable[[], float] = time.time,
) -> int:
    """Queue each published study as a new version; return how many could not be queued."""
    finisher = StudyFinisher(journal, options=fhir_options(settings))
    failures = 0
    for index, study_uid in enumerate(study_uids, start=1):
        prefix = f"[{index}/{len(study_uids)}] {study_uid}"
        records = journal.study_records(study_uid)
        row = journal.study(study_uid)
        if row is None or not records:
            report(f"{prefix}: unknown study (or its records were pruned)")
            failures += 1
            continue
        aggregator = Aggregator(quiet_period=0)
        aggregator.restore(records, row.last_received_at)
        message = finisher.republish(aggregator.pop(study_uid), clock())
        if message is None:
            report(f"{prefix}: not published yet ({row.state}); it is published when finished")
            failures += 1
            continue
        report(f"{prefix}: queued as version {message.version}")
    return failures
