"""What the service needs from durable storage: the JournalStore protocol and its values.

Two implementations: SQLite (:class:`listener.journal.Journal`) and PostgreSQL
(:class:`listener.journal_pg.PgJournal`); :func:`listener.journal_factory.open_journal` picks one
from ``storage.database_url``. The service and the operator commands depend on this protocol only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from listener.model import InstanceRecord

# The journal's tables, as named in both stores (the order migrate-journal copies them in).
JOURNAL_TABLES = ("studies", "instances", "mpps", "stale_files", "outbox")


class JournalError(Exception):
    """The journal could not commit; ``full`` is True when the disk (or its reserve) is full."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class Change(enum.Enum):
    """What adding an instance did to the journal."""

    NEW = "new"
    CHANGED = "changed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of recording an instance.

    ``reopened`` lists studies that had been published and are pending again because of this
    instance (its own study, and the study it moved away from, if any). ``emptied`` names the
    study it moved away from when that study has no instances left: there is nothing to publish
    for it, so it is not pending. ``stale_file`` is the instance's previous file when it moved
    to another series or study: delete it, then :meth:`JournalStore.forget_stale_file`.
    """

    change: Change
    reopened: tuple[str, ...] = ()
    sequence: int = 0  # pass to make_durable() before acknowledging
    emptied: tuple[str, ...] = ()
    stale_file: str = ""


# The columns of a StudyRow, in its field order (the same in both journals).
STUDY_COLUMNS = (
    "study_uid, state, version, digest, last_received_at,"
    " coalesce(opened_at, last_received_at), revision"
)


@dataclass(frozen=True, slots=True)
class StudyRow:
    """A study's durable state.

    ``revision`` grows with every new or changed instance: with ``version`` it is the fence a
    claim on the study checks before finishing it.
    """

    study_uid: str
    state: str
    version: int
    digest: str | None
    last_received_at: float
    opened_at: float  # when it last became pending: max_study_age_seconds counts from here
    revision: int = 0


@dataclass(frozen=True, slots=True)
class StudySummary:
    """One line of ``dicom-listener studies``."""

    study_uid: str
    state: str
    version: int
    last_received_at: float
    finished_at: float | None
    instances: int
    series: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One finished study version waiting for the broker's confirm."""

    id: int
    study_uid: str
    version: int
    message_id: str
    headers: dict[str, Any]
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Exact keys narrowing a search of instance records; None leaves a key open."""

    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None


class JournalStore(Protocol):
    """What the service needs from durable storage; :class:`Journal` documents each method."""

    def add_instance(self, record: InstanceRecord, received_at: float) -> AddResult:
        """Record an instance (durable once make_durable(result.sequence) returns)."""

    def make_durable(self, sequence: int) -> None:
        """Wait until a commit is on stable storage."""

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The record held for a SOP Instance UID."""

    def stale_files(self) -> list[str]:
        """Files of moved instances not yet deleted."""

    def forget_stale_file(self, path: str) -> None:
        """Record that a stale file was deleted."""

    def study(self, study_uid: str) -> StudyRow | None:
        """One study's durable state."""

    def study_records(self, study_uid: str) -> list[InstanceRecord]:
        """Every instance record of a study."""

    def pending_studies(self) -> list[StudyRow]:
        """Studies not yet finished."""

    def settle_if_empty(self, study_uid: str) -> bool:
        """Take a pending study with no instance records out of pending; True if it had none."""

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
        """Mark a study published and queue its message, atomically; False if the fence failed."""

    def due_studies(
        self, now: float, *, quiet_period: float, max_age: float, holder: str = ""
    ) -> list[StudyRow]:
        """Pending studies no other process holds that may be due at ``now``."""

    def claim_study(
        self, study_uid: str, *, now: float, until: float, holder: str = ""
    ) -> StudyRow | None:
        """Hold a pending study until ``until``; its row, or None if another process holds it."""

    def release_study(self, study_uid: str) -> None:
        """Give up a claim."""

    def pending_count(self) -> int:
        """How many studies are pending."""

    def unconsumed_steps(self, study_uid: str) -> list[tuple[dict[str, Any], float]]:
        """Final MPPS of a study no finished version took into account, and when each was saved."""

    def consume_procedure_steps(self, sop_instance_uids: Sequence[str]) -> None:
        """Record that these MPPS need not shape a later version of their study."""

    def finished_before(
        self, cutoff: float, *, after: tuple[float, str], limit: int
    ) -> list[tuple[float, str]]:
        """(finished_at, study_uid) of published or pruned studies finished before ``cutoff``."""

    def mark_files_removed(self, study_uid: str) -> None:
        """Record that a study's files were deleted."""

    def prune_study(self, study_uid: str) -> None:
        """Forget a published study's instance records."""

    def next_outbox(
        self, *, now: float | None = None, lease_until: float | None = None, holder: str = ""
    ) -> OutboxMessage | None:
        """The oldest unconfirmed message whose study has none older; held until lease_until."""

    def release_holder(self, holder: str) -> None:
        """Release every claim and lease ``holder`` took."""

    def release_outbox(self, message_id: int) -> None:
        """Let another relay publish a message."""

    def outbox_depth(self) -> int:
        """How many messages wait for the broker."""

    def remove_outbox(self, message_id: int) -> None:
        """Forget a confirmed message."""

    def queue_republication(self, message: OutboxMessage) -> bool:
        """Queue a new version of a published study."""

    def save_procedure_step(
        self, step: dict[str, Any], attributes: dict[str, Any], *, now: float
    ) -> None:
        """Store an MPPS."""

    def procedure_step(self, sop_instance_uid: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """One MPPS's state and attributes."""

    def procedure_steps(self, study_uid: str) -> list[dict[str, Any]]:
        """A study's MPPS states."""

    def held_instances(self, sop_instance_uids: list[str]) -> dict[str, InstanceRecord]:
        """Records of the instances held."""

    def writable(self) -> bool:
        """True when the store accepts writes."""

    def list_studies(self, *, limit: int) -> list[StudySummary]:
        """Pending and recently finished studies."""

    def find_records(self, query: RecordQuery) -> list[InstanceRecord]:
        """Instance records matching a query's exact keys."""

    def close(self) -> None:
        """Release the store."""


class JournalSource(Protocol):
    """One consistent read of a journal's tables, row by row (what migrate-journal copies)."""

    def columns(self, table: str) -> tuple[str, ...]:
        """The columns ``table`` has in this journal (none if it lacks the table)."""

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """The values of ``columns`` in each row of ``table``, in the order they were written."""
