"""The PostgreSQL journal's schema, versioned, and its creation at start.

Several nodes may start at once against one database: creation and upgrade run in one transaction
under a transaction-level advisory lock, so exactly one of them creates the tables and the others
find them done. DDL is transactional in PostgreSQL, so a start that fails half-way leaves nothing.

The tables mirror the SQLite journal's (schema 4), with what the coming scale-out needs: the study
``version`` is the fence a claim can compare, and nothing depends on state held in one process.
"""

from __future__ import annotations

from typing import Any

from listener.journal_api import JournalError

SCHEMA_VERSION = (
    2  # 2: claims (studies.revision, .claimed_until, mpps.consumed, outbox.leased_until)
)

# Any constant shared by every node: the key of the advisory lock held while creating the schema.
SCHEMA_LOCK_KEY = 0x44494C4A  # "DILJ"

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    patient_id TEXT,
    accession_number TEXT,
    record TEXT NOT NULL,  -- the InstanceRecord as canonical JSON (sorted keys)
    received_at DOUBLE PRECISION NOT NULL,
    seq BIGSERIAL NOT NULL  -- order of writing, as SQLite's rowid
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_uid);
CREATE INDEX IF NOT EXISTS instances_by_patient ON instances (patient_id);
CREATE INDEX IF NOT EXISTS instances_by_accession ON instances (accession_number);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'published', 'pruned')),
    version INTEGER NOT NULL DEFAULT 0,  -- only ever grows: the fence of a claim
    digest TEXT,
    last_received_at DOUBLE PRECISION NOT NULL,
    opened_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    files_removed BOOLEAN NOT NULL DEFAULT FALSE,
    revision INTEGER NOT NULL DEFAULT 0,  -- grows with every new or changed instance: a fence
    claimed_until DOUBLE PRECISION,  -- the node finishing it holds it until then (a lease)
    claimed_by TEXT  -- which process: its successor releases the claim at start
);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies (state, finished_at);
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    attributes TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    seq BIGSERIAL NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0  -- 1 once a finished version took its outcome into account
);
CREATE INDEX IF NOT EXISTS mpps_by_study ON mpps (study_uid);
CREATE TABLE IF NOT EXISTS stale_files (
    path TEXT PRIMARY KEY,  -- relative to data_dir/instances (of the node that wrote it)
    since DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    study_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    leased_until DOUBLE PRECISION,  -- the relay publishing it holds it until then
    leased_by TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_study ON outbox (study_uid, id);
"""

# Schema 1 -> 2: the claim columns (CREATE TABLE IF NOT EXISTS leaves existing tables alone).
UPGRADE_TO_2 = """
ALTER TABLE studies ADD COLUMN IF NOT EXISTS revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS claimed_until DOUBLE PRECISION;
ALTER TABLE studies ADD COLUMN IF NOT EXISTS claimed_by TEXT;
ALTER TABLE mpps ADD COLUMN IF NOT EXISTS consumed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS leased_until DOUBLE PRECISION;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS leased_by TEXT;
"""


class SchemaTooNew(JournalError):
    """The database was created by a newer release than this one."""


def ensure_schema(connection: Any, *, where: str) -> None:
    """Create or upgrade the schema in one transaction under the schema advisory lock.

    ``connection`` is a psycopg connection outside a transaction; ``where`` names the database
    in the error raised when its schema is newer than this release reads.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        exists = connection.execute("SELECT to_regclass('journal_schema')").fetchone()
        row = None
        if exists and exists[0] is not None:
            row = connection.execute("SELECT version FROM journal_schema").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"journal {where} has schema version {version}; this release reads {SCHEMA_VERSION}"
            )
        # Upgrades from older versions, each guarded by the version it starts from, come before
        # SCHEMA, whose indexes may name the columns they add.
        if 0 < version < 2:
            connection.execute(UPGRADE_TO_2)
        connection.execute(SCHEMA)
        connection.execute(
            "INSERT INTO journal_schema (version) VALUES (%s)"
            " ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )
