"""Statements both journals run alike: claims on due studies and on outbox messages.

Written once with ``%s`` placeholders; :func:`statements` renders them in a driver's style
(SQLite's ``?``, psycopg's ``%s``). Only standard SQL both databases read goes here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from listener.journal_api import STUDY_COLUMNS, OutboxMessage, StudyRow

_OUTBOX_COLUMNS = "id, study_uid, version, message_id, headers, body, created_at"


@dataclass(frozen=True, slots=True)
class Statements:
    """The shared statements, each in one driver's placeholder style."""

    due_studies: str = (
        f"SELECT {STUDY_COLUMNS} FROM studies s WHERE state = 'pending'"
        " AND (coalesce(claimed_until, 0) <= %s OR claimed_by = %s) AND ("
        " last_received_at + %s <= %s"
        " OR (%s > 0 AND coalesce(opened_at, last_received_at) + %s <= %s)"
        " OR EXISTS (SELECT 1 FROM mpps m WHERE m.study_uid = s.study_uid AND m.consumed = 0"
        " AND m.status IN ('COMPLETED', 'DISCONTINUED')))"
        " ORDER BY last_received_at, study_uid"
    )
    claim_study: str = (
        "UPDATE studies SET claimed_until = %s, claimed_by = %s"
        " WHERE study_uid = %s AND state = 'pending'"
        f" AND (coalesce(claimed_until, 0) <= %s OR claimed_by = %s) RETURNING {STUDY_COLUMNS}"
    )
    release_study: str = "UPDATE studies SET claimed_until = NULL WHERE study_uid = %s"
    release_claims_of: str = "UPDATE studies SET claimed_until = NULL WHERE claimed_by = %s"
    release_leases_of: str = "UPDATE outbox SET leased_until = NULL WHERE leased_by = %s"
    # The fence: the version and revision the claim saw, and still pending.
    finish_fenced: str = (
        "UPDATE studies SET state = 'published', digest = %s, finished_at = %s,"
        " version = coalesce(CAST(%s AS INTEGER), version), claimed_until = NULL"
        " WHERE study_uid = %s AND state = 'pending' AND version = %s AND revision = %s"
    )
    consume_step: str = "UPDATE mpps SET consumed = 1 WHERE sop_instance_uid = %s"
    unconsumed_steps: str = (
        "SELECT step, updated_at FROM mpps WHERE study_uid = %s AND consumed = 0"
        " AND status IN ('COMPLETED', 'DISCONTINUED') ORDER BY updated_at, sop_instance_uid"
    )
    pending_count: str = "SELECT count(*) FROM studies WHERE state = 'pending'"
    # Finished studies (published or pruned) after a (finished_at, study_uid) mark, in that order.
    finished_before: str = (
        "SELECT finished_at, study_uid FROM studies WHERE state IN ('published', 'pruned')"
        " AND finished_at < %s AND (finished_at > %s OR (finished_at = %s AND study_uid > %s))"
        " ORDER BY finished_at, study_uid LIMIT %s"
    )
    # The oldest message, among those no relay holds, whose study has no older message waiting.
    next_outbox: str = (
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox o"
        " WHERE (coalesce(leased_until, 0) <= %s OR leased_by = %s)"
        " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.study_uid = o.study_uid AND p.id < o.id)"
        " ORDER BY id LIMIT 1"
    )
    lease_outbox: str = "UPDATE outbox SET leased_until = %s, leased_by = %s WHERE id = %s"
    release_outbox: str = "UPDATE outbox SET leased_until = NULL WHERE id = %s"


def statements(placeholder: str) -> Statements:
    """The shared statements with ``placeholder`` for each parameter."""
    default = Statements()
    rendered = {
        field.name: getattr(default, field.name).replace("%s", placeholder)
        for field in fields(Statements)
    }
    return Statements(**rendered)


def due_values(
    now: float, quiet_period: float, max_age: float, holder: str
) -> tuple[float | str | None, ...]:
    """The parameters of ``due_studies``."""
    return (now, holder_value(holder), quiet_period, now, max_age, max_age, now)


def holder_value(holder: str) -> str | None:
    """A holder as stored: NULL for an anonymous one, which therefore never matches another."""
    return holder or None


def fence_values(
    fence: StudyRow, digest: str, finished_at: float, version: int | None
) -> tuple[Any, ...]:
    """The parameters of ``finish_fenced``."""
    return (digest, finished_at, version, fence.study_uid, fence.version, fence.revision)


def outbox_message(row: Any) -> OutboxMessage:
    """An outbox row (id, study_uid, version, message_id, headers, body, created_at)."""
    return OutboxMessage(
        id=row[0],
        study_uid=row[1],
        version=row[2],
        message_id=row[3],
        headers=json.loads(row[4]),
        body=bytes(row[5]),
        created_at=row[6],
    )
