"""The journal in PostgreSQL: the same :class:`JournalStore` as SQLite, shareable by several nodes.

Every method runs in one transaction on a connection from a pool (psycopg 3, psycopg_pool). A
commit returns only once PostgreSQL has made it durable (``synchronous_commit`` on, the server
default, which this module sets per session), so :meth:`PgJournal.make_durable` has nothing left
to do. Every database error, an unreachable server included, is raised as :class:`JournalError`:
a C-STORE that cannot be committed is answered with a failure status, never success.

Nothing here depends on state held in this process: rows are locked (``FOR UPDATE``, advisory
locks on the SOP Instance UID) where SQLite relied on its single writer.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from listener.journal_api import (
    STUDY_COLUMNS,
    AddResult,
    Change,
    JournalError,
    OutboxMessage,
    RecordQuery,
    StudyRow,
    StudySummary,
)
from listener.journal_pg_connect import PROBE, Connection, configure, conninfo, safe_url
from listener.journal_pg_schema import SchemaTooNew, ensure_schema
from listener.journal_pg_sql import (
    FIND_COLUMNS,
    INSERT_INSTANCE,
    LIST_STUDIES,
    SAVE_MPPS,
    UPSERT_FINISHED,
    has_instances,
    insert_outbox,
    instance_values,
    lock_study,
    mark_pending,
    note_stale_file,
    query_values,
    settle_empty,
)
from listener.journal_sql import (
    due_values,
    fence_values,
    holder_value,
    outbox_message,
    statements,
)
from listener.model import InstanceRecord

_SQL = statements("%s")
# Relays on several nodes skip a message another has locked rather than wait for it.
_NEXT_OUTBOX = _SQL.next_outbox + " FOR UPDATE SKIP LOCKED"

POOL_TIMEOUT_SECONDS = 5.0  # a C-STORE waits no longer than this for a connection
_DISK_FULL = "53100"  # SQLSTATE disk_full


class PgJournal:
    """PostgreSQL implementation of :class:`JournalStore`; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        password: str = "",
        max_connections: int = 8,
        timeout: float = POOL_TIMEOUT_SECONDS,
    ) -> None:
        self._pool = psycopg_pool.ConnectionPool(
            conninfo(url, password),
            min_size=1,
            max_size=max_connections,
            timeout=timeout,
            check=psycopg_pool.ConnectionPool.check_connection,
            configure=configure,
            # The pool's reconnect backoff doubles without bound (1, 2, 4, ... s) until it gives
            # up: after a long outage the database could be back for a minute before a C-STORE
            # got a connection. Giving up after ``timeout`` restarts the backoff on demand.
            reconnect_timeout=timeout,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
            with self._pool.connection() as connection:
                ensure_schema(connection, where=safe_url(url))
        except SchemaTooNew:
            self._pool.close()
            raise
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._pool.close()
            raise JournalError(f"journal database {safe_url(url)} unusable: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A pooled connection in one transaction, committed on exit; errors as JournalError."""
        try:
            with self._pool.connection() as connection, connection.transaction():
                yield connection
        except psycopg_pool.PoolTimeout as exc:
            raise JournalError(f"journal database unreachable: {exc}") from exc
        except psycopg.Error as exc:
            full = getattr(exc, "sqlstate", None) == _DISK_FULL
            raise JournalError(f"journal write failed: {exc}", full=full) from exc

    def make_durable(self, sequence: int) -> None:
        """Nothing to do: every commit was durable when it returned (synchronous_commit on)."""

    def add_instance(self, record: InstanceRecord, received_at: float) -> AddResult:
        """Record ``record`` as :meth:`listener.journal.Journal.add_instance` does."""
        document = record.to_json()
        encoded = json.dumps(document, sort_keys=True)
        with self._transaction() as db:
            # Serialises writers of one SOP instance across nodes, even before its row exists.
            db.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (record.sop_instance_uid,)
            )
            row = db.execute(
                "SELECT study_uid, record FROM instances WHERE sop_instance_uid = %s",
                (record.sop_instance_uid,),
            ).fetchone()
            if row is not None and row[1] == encoded:
                return AddResult(Change.DUPLICATE)
            stale = note_stale_file(db, row[1] if row else None, record, received_at)
            db.execute(
                "DELETE FROM instances WHERE sop_instance_uid = %s", (record.sop_instance_uid,)
            )
            db.execute(INSERT_INSTANCE, instance_values(record, document, encoded, received_at))
            reopened = [record.study_uid] if mark_pending(db, record.study_uid, received_at) else []
            emptied: tuple[str, ...] = ()
            if row is not None and row[0] != record.study_uid:
                left_behind = row[0]
                lock_study(db, left_behind)
                if has_instances(db, left_behind):
                    if mark_pending(db, left_behind, received_at):
                        reopened.append(left_behind)
                else:
                    settle_empty(db, left_behind)
                    emptied = (left_behind,)
        change = Change.NEW if row is None else Change.CHANGED
        return AddResult(change, tuple(reopened), 0, emptied, stale)

    def stale_files(self) -> list[str]:
        """Files of moved instances not yet deleted."""
        with self._transaction() as db:
            rows = db.execute("SELECT path FROM stale_files ORDER BY since").fetchall()
        return [row[0] for row in rows]

    def forget_stale_file(self, path: str) -> None:
        """Record that a stale file was deleted."""
        with self._transaction() as db:
            db.execute("DELETE FROM stale_files WHERE path = %s", (path,))

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The record held for a SOP Instance UID, if any."""
        return self.held_instances([sop_instance_uid]).get(sop_instance_uid)

    def settle_if_empty(self, study_uid: str) -> bool:
        """Settle a pending study that has no instance records; True if it had none."""
        with self._transaction() as db:
            lock_study(db, study_uid)
            if has_instances(db, study_uid):
                return False
            settle_empty(db, study_uid)
        return True

    def study(self, study_uid: str) -> StudyRow | None:
        """The durable state of one study, if known."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {STUDY_COLUMNS} FROM studies WHERE study_uid = %s", (study_uid,)
            ).fetchone()
        return StudyRow(*row) if row else None

    def study_records(self, study_uid: str) -> list[InstanceRecord]:
        """Every instance record of a study, in order of reception (the most recent last)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT record FROM instances WHERE study_uid = %s ORDER BY received_at, seq",
                (study_uid,),
            ).fetchall()
        return [InstanceRecord.from_json(json.loads(row[0])) for row in rows]

    def pending_studies(self) -> list[StudyRow]:
        """Studies received but not yet finished, oldest last arrival first."""
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {STUDY_COLUMNS} FROM studies"
                " WHERE state = 'pending' ORDER BY last_received_at, study_uid"
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
        """Mark a study published and queue its message (if any); False if the fence failed."""
        version = message.version if message else None
        with self._transaction() as db:
            if fence is not None:
                values = fence_values(fence, digest, finished_at, version)
                if db.execute(_SQL.finish_fenced, values).rowcount == 0:
                    return False
            else:
                db.execute(
                    UPSERT_FINISHED, (study_uid, version, digest, finished_at, finished_at, version)
                )
            for uid in consumed_steps:
                db.execute(_SQL.consume_step, (uid,))
            if message is not None:
                insert_outbox(db, message)
        return True

    def due_studies(
        self, now: float, *, quiet_period: float, max_age: float, holder: str = ""
    ) -> list[StudyRow]:
        """Pending studies no other node holds that may be due at ``now`` (to claim)."""
        values = due_values(now, quiet_period, max_age, holder)
        with self._transaction() as db:
            rows = db.execute(_SQL.due_studies, values).fetchall()
        return [StudyRow(*row) for row in rows]

    def claim_study(
        self, study_uid: str, *, now: float, until: float, holder: str = ""
    ) -> StudyRow | None:
        """Hold a pending study until ``until`` unless another node holds it; its row if held."""
        with self._transaction() as db:
            values = (until, holder_value(holder), study_uid, now, holder_value(holder))
            row = db.execute(_SQL.claim_study, values).fetchone()
        return StudyRow(*row) if row else None

    def release_study(self, study_uid: str) -> None:
        """Give up a claim (the study was not finished after all)."""
        with self._transaction() as db:
            db.execute(_SQL.release_study, (study_uid,))

    def pending_count(self) -> int:
        """How many studies are pending."""
        with self._transaction() as db:
            row = db.execute(_SQL.pending_count).fetchone()
        return int(row[0]) if row else 0

    def unconsumed_steps(self, study_uid: str) -> list[tuple[dict[str, Any], float]]:
        """Final MPPS of a study no finished version took into account, with when each was saved."""
        with self._transaction() as db:
            rows = db.execute(_SQL.unconsumed_steps, (study_uid,)).fetchall()
        return [(json.loads(row[0]), float(row[1])) for row in rows]

    def consume_procedure_steps(self, sop_instance_uids: Sequence[str]) -> None:
        """Record that these MPPS need not shape a later version of their study."""
        with self._transaction() as db:
            for uid in sop_instance_uids:
                db.execute(_SQL.consume_step, (uid,))

    def queue_republication(self, message: OutboxMessage) -> bool:
        """Queue a new version of a published study; False if it is not (or no longer) published."""
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE studies SET version = %s WHERE study_uid = %s AND state = 'published'"
                " AND version = %s - 1",
                (message.version, message.study_uid, message.version),
            ).rowcount
            if updated:
                insert_outbox(db, message)
        return bool(updated)

    def save_procedure_step(
        self, step: dict[str, Any], attributes: dict[str, Any], *, now: float
    ) -> None:
        """Store an MPPS: its state (``step``) and its full attribute set (DICOM JSON)."""
        values = (
            step["sop_instance_uid"],
            step["study_uid"],
            step["status"],
            json.dumps(step, sort_keys=True),
            json.dumps(attributes, sort_keys=True),
            now,
        )
        with self._transaction() as db:
            db.execute(SAVE_MPPS, values)

    def procedure_step(self, sop_instance_uid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """An MPPS's state and attributes, as saved."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT step, attributes FROM mpps WHERE sop_instance_uid = %s",
                (sop_instance_uid,),
            ).fetchone()
        return (json.loads(row[0]), json.loads(row[1])) if row else None

    def procedure_steps(self, study_uid: str) -> list[dict[str, Any]]:
        """The states of every MPPS of a study."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT step FROM mpps WHERE study_uid = %s ORDER BY updated_at, seq", (study_uid,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def held_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        """The records of those instances the journal holds (for storage commitment)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT sop_instance_uid, record FROM instances WHERE sop_instance_uid = ANY(%s)",
                (list(sop_instance_uids),),
            ).fetchall()
        return {row[0]: InstanceRecord.from_json(json.loads(row[1])) for row in rows}

    def finished_before(
        self, cutoff: float, *, after: tuple[float, str], limit: int
    ) -> list[tuple[float, str]]:
        """(finished_at, study_uid) of studies finished before ``cutoff``, after ``after``."""
        values = (cutoff, after[0], after[0], after[1], limit)
        with self._transaction() as db:
            rows = db.execute(_SQL.finished_before, values).fetchall()
        return [(float(row[0]), str(row[1])) for row in rows]

    def mark_files_removed(self, study_uid: str) -> None:
        """Record that a published study's instance files were deleted."""
        with self._transaction() as db:
            db.execute("UPDATE studies SET files_removed = TRUE WHERE study_uid = %s", (study_uid,))

    def prune_study(self, study_uid: str) -> None:
        """Forget a published study's instance records; its version number is kept."""
        with self._transaction() as db:
            pruned = db.execute(
                "UPDATE studies SET state = 'pruned', digest = NULL, files_removed = TRUE"
                " WHERE study_uid = %s AND state = 'published'",
                (study_uid,),
            ).rowcount
            if pruned:
                db.execute("DELETE FROM instances WHERE study_uid = %s", (study_uid,))

    def next_outbox(
        self, *, now: float | None = None, lease_until: float | None = None, holder: str = ""
    ) -> OutboxMessage | None:
        """The oldest message no relay holds whose study has no older one waiting.

        With ``lease_until`` it is held until then, so relays on other nodes take other
        studies' messages meanwhile.
        """
        held_after = math.inf if now is None else now
        with self._transaction() as db:
            row = db.execute(_NEXT_OUTBOX, (held_after, holder_value(holder))).fetchone()
            if row is not None and lease_until is not None:
                db.execute(_SQL.lease_outbox, (lease_until, holder_value(holder), row[0]))
        return outbox_message(row) if row else None

    def release_holder(self, holder: str) -> None:
        """Release every claim and lease ``holder`` took (its predecessor died holding them)."""
        with self._transaction() as db:
            db.execute(_SQL.release_claims_of, (holder,))
            db.execute(_SQL.release_leases_of, (holder,))

    def release_outbox(self, message_id: int) -> None:
        """Let another relay publish a message this one could not."""
        with self._transaction() as db:
            db.execute(_SQL.release_outbox, (message_id,))

    def outbox_depth(self) -> int:
        """How many messages wait for the broker."""
        with self._transaction() as db:
            row = db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0]) if row else 0

    def remove_outbox(self, message_id: int) -> None:
        """Forget a message the broker has confirmed."""
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = %s", (message_id,))

    def writable(self) -> bool:
        """True when a write transaction commits now (for /readyz)."""
        try:
            with self._transaction() as db:
                db.execute(PROBE)
        except JournalError:
            return False
        return True

    def list_studies(self, *, limit: int) -> list[StudySummary]:
        """Pending studies first, then the most recently finished, with their counts."""
        with self._transaction() as db:
            rows = db.execute(LIST_STUDIES, (limit,)).fetchall()
        return [StudySummary(*row) for row in rows]

    def find_records(self, query: RecordQuery) -> list[InstanceRecord]:
        """Records matching the exact keys of ``query`` (for DICOMweb; no key matches all)."""
        conditions, values = [], []
        for column, value in zip(FIND_COLUMNS, query_values(query), strict=True):
            if value is not None:
                conditions.append(f"{column} = %s")
                values.append(value)
        where = " AND ".join(conditions) or "TRUE"
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT record FROM instances WHERE {where} ORDER BY received_at, seq", values
            ).fetchall()
        return [InstanceRecord.from_json(json.loads(row[0])) for row in rows]

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()
