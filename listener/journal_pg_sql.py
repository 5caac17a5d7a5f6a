"""The PostgreSQL journal's statements and the steps shared by its methods (SQLite's counterparts).

The steps take an open connection inside the caller's transaction.
"""

from __future__ import annotations

import json
from typing import Any

from listener.journal_api import OutboxMessage, RecordQuery
from listener.model import InstanceRecord

# The columns RecordQuery's keys match, in its field order.
FIND_COLUMNS = ("study_uid", "series_uid", "sop_instance_uid", "patient_id", "accession_number")

# The instance columns PostgreSQL adds to SQLite's, copied out of the record for searching.
SEARCH_COLUMNS = ("series_uid", "patient_id", "accession_number")

INSERT_INSTANCE = (
    "INSERT INTO instances (sop_instance_uid, study_uid, series_uid, patient_id,"
    " accession_number, record, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)

# Pending again: opened_at restarts only when it was not pending before.
MARK_PENDING = (
    "INSERT INTO studies (study_uid, state, last_received_at, opened_at)"
    " VALUES (%s, 'pending', %s, %s)"
    " ON CONFLICT (study_uid) DO UPDATE SET state = 'pending', files_removed = FALSE,"
    " revision = studies.revision + 1,"
    " last_received_at = greatest(studies.last_received_at, excluded.last_received_at),"
    " opened_at = CASE WHEN studies.state = 'pending' THEN studies.opened_at"
    " ELSE excluded.opened_at END"
)

SETTLE_DELETE = "DELETE FROM studies WHERE study_uid = %s AND version = 0 AND state = 'pending'"
SETTLE_PUBLISH = "UPDATE studies SET state = 'published' WHERE study_uid = %s AND state = 'pending'"

# An upsert: a study published from its MPPS alone has no row yet. Parameters: study_uid,
# version (None keeps it), digest, last_received_at, finished_at, version again.
UPSERT_FINISHED = (
    "INSERT INTO studies (study_uid, state, version, digest, last_received_at, finished_at)"
    " VALUES (%s, 'published', coalesce(%s::integer, 0), %s, %s, %s)"
    " ON CONFLICT (study_uid) DO UPDATE SET state = 'published', digest = excluded.digest,"
    " finished_at = excluded.finished_at, version = coalesce(%s::integer, studies.version),"
    " claimed_until = NULL"
)

INSERT_OUTBOX = (
    "INSERT INTO outbox (study_uid, version, message_id, headers, body, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)

SAVE_MPPS = (
    "INSERT INTO mpps (sop_instance_uid, study_uid, status, step, attributes, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (sop_instance_uid) DO UPDATE SET study_uid = excluded.study_uid,"
    " status = excluded.status, step = excluded.step, attributes = excluded.attributes,"
    " updated_at = excluded.updated_at, seq = nextval(pg_get_serial_sequence('mpps', 'seq'))"
)

LIST_STUDIES = (
    "SELECT s.study_uid, s.state, s.version, s.last_received_at, s.finished_at,"
    " count(i.sop_instance_uid), count(DISTINCT i.series_uid)"
    " FROM studies s LEFT JOIN instances i ON i.study_uid = s.study_uid"
    " GROUP BY s.study_uid"
    " ORDER BY s.state != 'pending', coalesce(s.finished_at, s.last_received_at) DESC"
    " LIMIT %s"
)


def note_stale_file(db: Any, held: str | None, record: InstanceRecord, now: float) -> str:
    """List the held record's file as stale if ``record`` lives elsewhere; return it or ""."""
    if record.file:  # a file written here again is live, whatever an earlier move said
        db.execute("DELETE FROM stale_files WHERE path = %s", (record.file,))
    old = str(json.loads(held).get("file", "")) if held else ""
    if not old or old == record.file:
        return ""
    db.execute(
        "INSERT INTO stale_files (path, since) VALUES (%s, %s)"
        " ON CONFLICT (path) DO UPDATE SET since = excluded.since",
        (old, now),
    )
    return old


def lock_study(db: Any, study_uid: str) -> None:
    """Hold a study's row until commit (where SQLite relied on its single writer)."""
    db.execute("SELECT 1 FROM studies WHERE study_uid = %s FOR UPDATE", (study_uid,))


def has_instances(db: Any, study_uid: str) -> bool:
    """True if the journal holds an instance record of ``study_uid``."""
    found = db.execute("SELECT 1 FROM instances WHERE study_uid = %s LIMIT 1", (study_uid,))
    return found.fetchone() is not None


def settle_empty(db: Any, study_uid: str) -> None:
    """A study left with no instances: forget it if never published, else keep it published."""
    db.execute(SETTLE_DELETE, (study_uid,))
    db.execute(SETTLE_PUBLISH, (study_uid,))


def mark_pending(db: Any, study_uid: str, received_at: float) -> bool:
    """Make ``study_uid`` pending; return True if it had been published (or pruned) before."""
    previous = db.execute(
        "SELECT state FROM studies WHERE study_uid = %s FOR UPDATE", (study_uid,)
    ).fetchone()
    db.execute(MARK_PENDING, (study_uid, received_at, received_at))
    return previous is not None and previous[0] in ("published", "pruned")


def insert_outbox(db: Any, message: OutboxMessage) -> None:
    """Queue ``message`` for the broker."""
    db.execute(
        INSERT_OUTBOX,
        (
            message.study_uid,
            message.version,
            message.message_id,
            json.dumps(message.headers, sort_keys=True),
            message.body,
            message.created_at,
        ),
    )


def query_values(query: RecordQuery) -> tuple[str | None, ...]:
    """The keys of ``query`` in the order of FIND_COLUMNS."""
    return (
        query.study_uid,
        query.series_uid,
        query.sop_instance_uid,
        query.patient_id,
        query.accession_number,
    )


def search_values(document: dict[str, Any]) -> tuple[str | None, ...]:
    """A record's keys searched on their own columns (SEARCH_COLUMNS), from its JSON document."""

    def text(key: str) -> str | None:
        value = document.get(key)
        return None if value is None else str(value)

    return tuple(text(key) for key in SEARCH_COLUMNS)


def instance_values(
    record: InstanceRecord, document: dict[str, Any], encoded: str, received_at: float
) -> tuple[Any, ...]:
    """The parameters of INSERT_INSTANCE: the record and the keys searched on their own."""
    return (
        record.sop_instance_uid,
        record.study_uid,
        *search_values(document),
        encoded,
        received_at,
    )
