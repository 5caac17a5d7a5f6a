"""The durable record of what we acknowledged: instances, study state and the outbox (SQLite, WAL).

Every write is one transaction; its WAL frames are fsynced before the method returns (except
:meth:`Journal.add_instance`, whose caller calls :meth:`Journal.make_durable` outside its own
locks, so that concurrent associations share one fsync: group commit). Once durable, its
effect survives a crash or power cut. The in-memory aggregator is only a cache of this journal.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.journal_api import (
    STUDY_COLUMNS,
    AddResult,
    Change,
    JournalError,
    JournalStore,
    OutboxMessage,
    RecordQuery,
    StudyRow,
    StudySummary,
)
from listener.journal_sql import (
    due_values,
    fence_values,
    holder_value,
    outbox_message,
    statements,
)
from listener.model import InstanceRecord

__all__ = [
    "SCHEMA_VERSION",
    "AddResult",
    "Change",
    "Journal",
    "JournalError",
    "JournalStore",
    "OutboxMessage",
    "RecordQuery",
    "StudyRow",
    "StudySummary",
]

# 2: the mpps table; 3: studies.opened_at; 4: the stale_files table; 5: claims (studies.revision,
# studies.claimed_until, mpps.consumed, outbox.leased_until) for several processes on one journal
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    record TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'published', 'pruned')),
    version INTEGER NOT NULL DEFAULT 0,
    digest TEXT,
    last_received_at REAL NOT NULL,
    opened_at REAL,  -- when the study last became pending (for aggregator.max_study_age_seconds)
    finished_at REAL,
    files_removed INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0,  -- grows with every new or changed instance: a fence
    claimed_until REAL,  -- a process finishing it holds it until then (a lease)
    claimed_by TEXT  -- which process: its successor releases the claim at start
);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies (state, finished_at);
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_at REAL NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0  -- 1 once a finished version took its outcome into account
);
CREATE INDEX IF NOT EXISTS mpps_by_study ON mpps (study_uid);
-- Files of instances that moved to another series or study, until they are deleted.
CREATE TABLE IF NOT EXISTS stale_files (
    path TEXT PRIMARY KEY,  -- relative to data_dir/instances
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    leased_until REAL,  -- a relay publishing it holds it until then
    leased_by TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_study ON outbox (study_uid, id);
"""


# The columns added after the first release, by table: (name, SQL type and default).
_ADDED_COLUMNS = {
    "studies": [
        ("opened_at", "REAL"),
        ("revision", "INTEGER NOT NULL DEFAULT 0"),
        ("claimed_until", "REAL"),
        ("claimed_by", "TEXT"),
    ],
    "mpps": [("consumed", "INTEGER NOT NULL DEFAULT 0")],
    "outbox": [("leased_until", "REAL"), ("leased_by", "TEXT")],
}


_SQL = statements("?")


@dataclass
class _Transaction:
    db: sqlite3.Connection
    sequence: int = 0


class Journal:
    """SQLite implementation of :class:`JournalStore`; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Patient data: created 0600 before SQLite opens it, whose -wal and -shm copy its mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Another process (the CLI's republish) may write at the same time: wait, do not fail.
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: SQLite does not fsync at commit; make_durable() fsyncs the WAL, which makes
        # every commit written before it durable (WAL frames are replayed in order).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._wal_path = Path(f"{path}-wal")
        self._wal_fd: int | None = None
        self._committed = self._synced = 0
        self._sync_lock = threading.Lock()
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"journal {path} has schema version {version}; this release reads {SCHEMA_VERSION}"
            )
        self._upgrade()
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _upgrade(self) -> None:
        """Add the columns older schemas lack (new tables come from ``_SCHEMA`` itself).

        A study without ``opened_at`` counts from its last arrival, which never publishes
        earlier than max_study_age_seconds allows.
        """
        for table, added in _ADDED_COLUMNS.items():
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if not columns:
                continue  # a new journal: _SCHEMA creates the table whole
            for name, declaration in added:
                if name not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[_Transaction]:
        """One ``BEGIN IMMEDIATE ... COMMIT``; on failure rolled back and raised as JournalError.

        With ``durable`` the commit is fsynced before the block's caller continues; otherwise
        the caller passes ``transaction.sequence`` to :meth:`make_durable` when it needs to.
        """
        transaction = _Transaction(self._db)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield transaction
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    full = exc.sqlite_errorcode == sqlite3.SQLITE_FULL
                    raise JournalError(f"journal write failed: {exc}", full=full) from exc
                raise
            self._committed += 1
            transaction.sequence = self._committed
        if durable:
            self.make_durable(transaction.sequence)

    def make_durable(self, sequence: int) -> None:
        """Return once commit number ``sequence`` (and every earlier one) is on stable storage."""
        with self._sync_lock:
            if self._synced >= sequence:
                return  # another thread's fsync already covered it
            with self._lock:
                target = self._committed
            try:
                if self._wal_fd is None:
                    self._wal_fd = os.open(self._wal_path, os.O_RDONLY)
                # Data and size, not timestamps: all a reader of the WAL needs (SQLite's own
                # WAL syncs are fdatasync too); the WAL's name was made durable when it was made.
                os.fdatasync(self._wal_fd)
            except OSError as exc:
                raise JournalError(f"journal sync failed: {exc}", full=exc.errno == 28) from exc
            self._synced = target

    def add_instance(self, record: InstanceRecord, received_at: float) -> AddResult:
        """Record ``record``; an identical re-send changes nothing.

        A record whose file moved (another series or study) lists its old file in
        ``stale_files`` in the same transaction; the result names it for deletion.
        Not yet durable on return: call :meth:`make_durable` with the result's sequence.
        """
        encoded = json.dumps(record.to_json(), sort_keys=True)
        with self._transaction(durable=False) as transaction:
            db = transaction.db
            row = db.execute(
                "SELECT study_uid, record FROM instances WHERE sop_instance_uid = ?",
                (record.sop_instance_uid,),
            ).fetchone()
            if row is not None and row[1] == encoded:
                return AddResult(Change.DUPLICATE)  # nothing written: nothing to make durable
            stale = self._note_stale_file(db, row[1] if row else None, record, received_at)
            db.execute(
                "INSERT OR REPLACE INTO instances"
                " (sop_instance_uid, study_uid, record, received_at) VALUES (?, ?, ?, ?)",
                (record.sop_instance_uid, record.study_uid, encoded, received_at),
            )
            reopened = (
                [record.study_uid] if self._mark_pending(db, record.study_uid, received_at) else []
            )
            emptied: tuple[str, ...] = ()
            if row is not None and row[0] != record.study_uid:
                left_behind = row[0]
                if self._has_instances(db, left_behind):
                    if self._mark_pending(db, left_behind, received_at):
                        reopened.append(left_behind)
                else:
                    self._settle_empty(db, left_behind)
                    emptied = (left_behind,)
        change = Change.NEW if row is None else Change.CHANGED
        return AddResult(change, tuple(reopened), transaction.sequence, emptied, stale)

    @staticmethod
    def _note_stale_file(
        db: sqlite3.Connection, held: str | None, record: InstanceRecord, now: float
    ) -> str:
        """List the held record's file as stale if ``record`` lives elsewhere; return it or ""."""
        if record.file:  # a file written here again is live, whatever an earlier move said
            db.execute("DELETE FROM stale_files WHERE path = ?", (record.file,))
        old = str(json.loads(held).get("file", "")) if held else ""
        if not old or old == record.file:
            return ""
        db.execute("INSERT OR REPLACE INTO stale_files (path, since) VALUES (?, ?)", (old, now))
        return old

    def stale_files(self) -> list[str]:
        """Files of moved instances not yet deleted (a crash came between commit and delete)."""
        with self._lock:
            rows = self._db.execute("SELECT path FROM stale_files ORDER BY since").fetchall()
        return [row[0] for row in rows]

    def forget_stale_file(self, path: str) -> None:
        """Record that a stale file was deleted (not fsynced: deleting it again is harmless)."""
        with self._transaction(durable=False) as transaction:
            transaction.db.execute("DELETE FROM stale_files WHERE path = ?", (path,))

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The record held for a SOP Instance UID, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return InstanceRecord.from_json(json.loads(row[0])) if row else None

    @staticmethod
    def _has_instances(db: sqlite3.Connection, study_uid: str) -> bool:
        found = db.execute("SELECT 1 FROM instances WHERE study_uid = ? LIMIT 1", (study_uid,))
        return found.fetchone() is not None

    @staticmethod
    def _settle_empty(db: sqlite3.Connection, study_uid: str) -> None:
        """A study left with no instances: forget it if never published, else keep it published.

        There is nothing to publish for it; a published one keeps its row so that its version
        numbers are never reused.
        """
        db.execute(
            "DELETE FROM studies WHERE study_uid = ? AND version = 0 AND state = 'pending'",
            (study_uid,),
        )
        db.execute(
            "UPDATE studies SET state = 'published' WHERE study_uid = ? AND state = 'pending'",
            (study_uid,),
        )

    def settle_if_empty(self, study_uid: str) -> bool:
        """Settle a pending study that has no instance records; True if it had none."""
        with self._transaction() as transaction:
            if self._has_instances(transaction.db, study_uid):
                return False
            self._settle_empty(transaction.db, study_uid)
        return True

    @staticmethod
    def _mark_pending(db: sqlite3.Connection, study_uid: str, received_at: float) -> bool:
        """Make ``study_uid`` pending; return True if it had been published (or pruned) before."""
        previous = db.execute(
            "SELECT state FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        # In DO UPDATE, bare column names are the existing row's values.
        db.execute(
            "INSERT INTO studies (study_uid, state, last_received_at, opened_at)"
            " VALUES (?, 'pending', ?, ?)"
            " ON CONFLICT (study_uid) DO UPDATE SET state = 'pending', files_removed = 0,"
            " revision = revision + 1,"
            " last_received_at = max(last_received_at, excluded.last_received_at),"
            " opened_at = CASE WHEN state = 'pending' THEN opened_at ELSE excluded.opened_at END",
            (study_uid, received_at, received_at),
        )
        return previous is not None and previous[0] in ("published", "pruned")

    def study(self, study_uid: str) -> StudyRow | None:
        """The durable state of one study, if known."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {STUDY_COLUMNS} FROM studies WHERE study_uid = ?",
                (study_uid,),
            ).fetchone()
        return StudyRow(*row) if row else None

    def study_records(self, study_uid: str) -> list[InstanceRecord]:
        """Every instance record of a study, in order of reception (the most recent last)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM instances WHERE study_uid = ? ORDER BY received_at, rowid",
                (study_uid,),
            ).fetchall()
        return [InstanceRecord.from_json(json.loads(row[0])) for row in rows]

    def pending_studies(self) -> list[StudyRow]:
        """Studies received but not yet finished, oldest last arrival first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {STUDY_COLUMNS} FROM studies"
                " WHERE state = 'pending' ORDER BY last_received_at"
            ).fetchall()
        return [StudyRow(*row) for row in rows]

    def finish_study(
        self,
        study_uid: str,
        *,
        digest: str,
        message: OutboxMessage | None,
        finished_at: float,
        fence: StudyRow | None = None,
        consumed_steps: Sequence[str] = (),
    ) -> bool:
        """Mark a study published and, in the same transaction, queue its message (if any).

        ``message`` is None when the content did not change since the last published version.
        With ``fence`` (the row a claim returned) nothing is written unless the study is still
        pending with that version and revision: False then, as another process finished it or
        an instance arrived since. ``consumed_steps`` are the MPPS this version took into account.
        """
        with self._transaction() as transaction:
            db = transaction.db
            version = message.version if message else None
            if fence is not None:
                updated = db.execute(
                    _SQL.finish_fenced, fence_values(fence, digest, finished_at, version)
                )
                if updated.rowcount == 0:
                    return False
            else:
                # An upsert: a study published from its MPPS alone has no row yet.
                db.execute(
                    "INSERT INTO studies (study_uid, state, version, digest, last_received_at,"
                    " finished_at) VALUES (?, 'published', coalesce(?, 0), ?, ?, ?)"
                    " ON CONFLICT (study_uid) DO UPDATE SET state = 'published', digest = ?,"
                    " finished_at = ?, version = coalesce(?, version), claimed_until = NULL",
                    (
                        study_uid,
                        version,
                        digest,
                        finished_at,
                        finished_at,
                        digest,
                        finished_at,
                        version,
                    ),
                )
            db.executemany(_SQL.consume_step, [(uid,) for uid in consumed_steps])
            if message is not None:
                self._insert_outbox(db, message)
        return True

    def due_studies(
        self, now: float, *, quiet_period: float, max_age: float, holder: str = ""
    ) -> list[StudyRow]:
        """Pending studies no other process holds that may be due at ``now`` (to claim)."""
        values = due_values(now, quiet_period, max_age, holder)
        with self._lock:
            rows = self._db.execute(_SQL.due_studies, values).fetchall()
        return [StudyRow(*row) for row in rows]

    def claim_study(
        self, study_uid: str, *, now: float, until: float, holder: str = ""
    ) -> StudyRow | None:
        """Hold a pending study until ``until`` unless another process holds it; its row if held."""
        values = (until, holder_value(holder), study_uid, now, holder_value(holder))
        with self._transaction(durable=False) as transaction:
            row = transaction.db.execute(_SQL.claim_study, values).fetchone()
        return StudyRow(*row) if row else None

    def release_study(self, study_uid: str) -> None:
        """Give up a claim (the study was not finished after all)."""
        with self._transaction(durable=False) as transaction:
            transaction.db.execute(_SQL.release_study, (study_uid,))

    def pending_count(self) -> int:
        """How many studies are pending."""
        with self._lock:
            return int(self._db.execute(_SQL.pending_count).fetchone()[0])

    def unconsumed_steps(self, study_uid: str) -> list[tuple[dict[str, Any], float]]:
        """Final MPPS of a study no finished version took into account, with when each was saved."""
        with self._lock:
            rows = self._db.execute(_SQL.unconsumed_steps, (study_uid,)).fetchall()
        return [(json.loads(row[0]), float(row[1])) for row in rows]

    def consume_procedure_steps(self, sop_instance_uids: Sequence[str]) -> None:
        """Record that these MPPS need not shape a later version of their study."""
        with self._transaction() as transaction:
            transaction.db.executemany(_SQL.consume_step, [(uid,) for uid in sop_instance_uids])

    @staticmethod
    def _insert_outbox(db: sqlite3.Connection, message: OutboxMessage) -> None:
        db.execute(
            "INSERT INTO outbox (study_uid, version, message_id, headers, body, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                message.study_uid,
                message.version,
                message.message_id,
                json.dumps(message.headers, sort_keys=True),
                message.body,
                message.created_at,
            ),
        )

    def queue_republication(self, message: OutboxMessage) -> bool:
        """Queue a new version of a published study; False if it is not (or no longer) published.

        The check and the write are one transaction, so a study the running listener re-opened
        meanwhile is left to the listener.
        """
        with self._transaction() as transaction:
            db = transaction.db
            updated = db.execute(
                "UPDATE studies SET version = ? WHERE study_uid = ? AND state = 'published'"
                " AND version = ? - 1",
                (message.version, message.study_uid, message.version),
            ).rowcount
            if updated:
                self._insert_outbox(db, message)
        return bool(updated)

    def save_procedure_step(
        self, step: dict[str, Any], attributes: dict[str, Any], *, now: float
    ) -> None:
        """Store an MPPS: its state (``step``) and its full attribute set (DICOM JSON)."""
        with self._transaction() as transaction:
            transaction.db.execute(
                "INSERT OR REPLACE INTO mpps"
                " (sop_instance_uid, study_uid, status, step, attributes, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    step["sop_instance_uid"],
                    step["study_uid"],
                    step["status"],
                    json.dumps(step, sort_keys=True),
                    json.dumps(attributes, sort_keys=True),
                    now,
                ),
            )

    def procedure_step(self, sop_instance_uid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """An MPPS's state and attributes, as saved."""
        with self._lock:
            row = self._db.execute(
                "SELECT step, attributes FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def procedure_steps(self, study_uid: str) -> list[dict[str, Any]]:
        """The states of every MPPS of a study."""
        with self._lock:
            rows = self._db.execute(
                "SELECT step FROM mpps WHERE study_uid = ? ORDER BY updated_at", (study_uid,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def held_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        """The records of those instances the journal holds (for storage commitment)."""
        held: dict[str, InstanceRecord] = {}
        with self._lock:
            for uid in sop_instance_uids:
                row = self._db.execute(
                    "SELECT record FROM instances WHERE sop_instance_uid = ?", (uid,)
                ).fetchone()
                if row:
                    held[uid] = InstanceRecord.from_json(json.loads(row[0]))
        return held

    def finished_before(
        self, cutoff: float, *, after: tuple[float, str], limit: int
    ) -> list[tuple[float, str]]:
        """(finished_at, study_uid) of studies finished before ``cutoff``, after the mark ``after``.

        Published and pruned studies alike, in that order: each node walks them once with its
        own mark, since each holds its own files.
        """
        values = (cutoff, after[0], after[0], after[1], limit)
        with self._lock:
            rows = self._db.execute(_SQL.finished_before, values).fetchall()
        return [(float(row[0]), str(row[1])) for row in rows]

    def mark_files_removed(self, study_uid: str) -> None:
        """Record that a published study's instance files were deleted."""
        with self._transaction() as transaction:
            db = transaction.db
            db.execute("UPDATE studies SET files_removed = 1 WHERE study_uid = ?", (study_uid,))

    def prune_study(self, study_uid: str) -> None:
        """Forget a published study's instance records; its version number is kept.

        A later instance re-opens it as a study holding only what arrives from then on, published
        as the next version (so message ids never repeat).
        """
        with self._transaction() as transaction:
            db = transaction.db
            pruned = db.execute(
                "UPDATE studies SET state = 'pruned', digest = NULL, files_removed = 1"
                " WHERE study_uid = ? AND state = 'published'",
                (study_uid,),
            ).rowcount
            if pruned:
                db.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,))

    def next_outbox(
        self, *, now: float | None = None, lease_until: float | None = None, holder: str = ""
    ) -> OutboxMessage | None:
        """The oldest message not yet confirmed whose study has no older one waiting.

        With ``now``, a message another relay holds past ``now`` is skipped; with
        ``lease_until``, the returned message is held until then (released by
        :meth:`release_outbox` or removed by :meth:`remove_outbox`).
        """
        held_after = math.inf if now is None else now
        with self._transaction(durable=False) as transaction:
            values = (held_after, holder_value(holder))
            row = transaction.db.execute(_SQL.next_outbox, values).fetchone()
            if row is not None and lease_until is not None:
                lease = (lease_until, holder_value(holder), row[0])
                transaction.db.execute(_SQL.lease_outbox, lease)
        return outbox_message(row) if row else None

    def release_holder(self, holder: str) -> None:
        """Release every claim and lease ``holder`` took (its predecessor died holding them)."""
        with self._transaction(durable=False) as transaction:
            transaction.db.execute(_SQL.release_claims_of, (holder,))
            transaction.db.execute(_SQL.release_leases_of, (holder,))

    def release_outbox(self, message_id: int) -> None:
        """Let another relay publish a message this one could not."""
        with self._transaction(durable=False) as transaction:
            transaction.db.execute(_SQL.release_outbox, (message_id,))

    def outbox_depth(self) -> int:
        """How many messages wait for the broker."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def remove_outbox(self, message_id: int) -> None:
        """Forget a message the broker has confirmed."""
        with self._transaction() as transaction:
            db = transaction.db
            db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def writable(self) -> bool:
        """True when a write transaction can be opened right now (for /readyz)."""
        try:
            with self._transaction(durable=False):
                pass
        except JournalError:
            return False
        return True

    def list_studies(self, *, limit: int) -> list[StudySummary]:
        """Pending studies first, then the most recently finished, with their counts."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_uid, s.state, s.version, s.last_received_at, s.finished_at,"
                " count(i.sop_instance_uid), count(DISTINCT json_extract(i.record, '$.series_uid'))"
                " FROM studies s LEFT JOIN instances i ON i.study_uid = s.study_uid"
                " GROUP BY s.study_uid"
                " ORDER BY s.state != 'pending', coalesce(s.finished_at, s.last_received_at) DESC"
                " LIMIT ?",
                (limit,),
            ).fetchall()
        return [StudySummary(*row) for row in rows]

    def find_records(self, query: RecordQuery) -> list[InstanceRecord]:
        """Records matching the exact keys of ``query`` (for DICOMweb; no key matches all)."""
        conditions, values = [], []
        for column, value in (
            ("study_uid", query.study_uid),
            ("json_extract(record, '$.series_uid')", query.series_uid),
            ("sop_instance_uid", query.sop_instance_uid),
            ("json_extract(record, '$.patient_id')", query.patient_id),
            ("json_extract(record, '$.accession_number')", query.accession_number),
        ):
            if value is not None:
                conditions.append(f"{column} = ?")
                values.append(value)
        where = " AND ".join(conditions) or "1 = 1"
        with self._lock:
            rows = self._db.execute(
                f"SELECT record FROM instances WHERE {where} ORDER BY received_at", values
            ).fetchall()
        return [InstanceRecord.from_json(json.loads(row[0])) for row in rows]

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self._db.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
