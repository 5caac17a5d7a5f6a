"""Study state built incrementally from instance records; decides when a study is finished.

A study is finished (due) when the first of these holds (docs/completion.md):

- ``mpps-completed``: a completed MPPS listed its instances and all of them are here;
- ``quiet-period``: ``quiet_period`` seconds passed without a new instance (with a completed
  MPPS still missing instances, not before its grace period ends either);
- ``max-age``: ``max_age`` seconds passed since the study's first instance (0 = never).

Series- and study-level values come from the most recently received instance (snapshots carry
each series' and the study's instances latest first; docs/mapping.md), so a re-sent instance with a
changed header relabels its series whichever instance it is.

Pure: the caller passes the current time, so tests drive it with a fake clock and recovery can
replay journal records with their original arrival times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from listener.model import InstanceRecord, SeriesState, StudyState

MPPS_COMPLETED, QUIET_PERIOD, MAX_AGE = "mpps-completed", "quiet-period", "max-age"


@dataclass
class _PendingStudy:
    last_arrival: float
    first_arrival: float
    series: dict[str, dict[str, InstanceRecord]] = field(default_factory=dict)
    expected: frozenset[str] = frozenset()
    expected_until: float = 0.0
    # SOP Instance UIDs in order of reception, the most recent last (a dict as an ordered set).
    received: dict[str, None] = field(default_factory=dict)

    def present(self) -> set[str]:
        return {uid for instances in self.series.values() for uid in instances}


def _forget(study: _PendingStudy, sop_instance_uid: str) -> None:
    """Take one instance out of ``study``, dropping its series if left empty."""
    study.received.pop(sop_instance_uid, None)
    for series_uid, instances in list(study.series.items()):
        if instances.pop(sop_instance_uid, None) is not None and not instances:
            del study.series[series_uid]


def _instance_order(record: InstanceRecord) -> tuple[bool, int, str]:
    number = record.instance_number
    return (number is None, number or 0, record.sop_instance_uid)


def _series_order(series: SeriesState) -> tuple[bool, int, str]:
    number = series.latest_first[0].series_number if series.latest_first else None
    return (number is None, number or 0, series.series_uid)


class Aggregator:
    """Pending studies by StudyInstanceUID, their series by UID, their instances by SOP UID.

    The same SOP Instance UID added twice is one instance (the later record replaces the earlier
    and becomes the most recently received); a study is due once ``quiet_period`` seconds have
    passed since its last new instance. :meth:`restore` takes records in reception order.
    """

    def __init__(self, *, quiet_period: float, max_age: float = 0.0) -> None:
        self._quiet_period = quiet_period
        self._max_age = max_age
        self._studies: dict[str, _PendingStudy] = {}
        self._study_of_instance: dict[str, str] = {}

    def add(self, record: InstanceRecord, now: float) -> bool:
        """Add ``record`` received at ``now``; return False if it is an identical duplicate."""
        previous_study = self._study_of_instance.get(record.sop_instance_uid)
        if previous_study is not None:
            pending = self._studies[previous_study]
            known = pending.series.get(record.series_uid, {}).get(record.sop_instance_uid)
            if known == record:
                return False
            if previous_study == record.study_uid:
                _forget(pending, record.sop_instance_uid)  # the study keeps its clocks and MPPS
            else:
                self.discard_instance(record.sop_instance_uid)
        study = self._studies.setdefault(
            record.study_uid, _PendingStudy(last_arrival=now, first_arrival=now)
        )
        study.last_arrival = max(study.last_arrival, now)
        study.first_arrival = min(study.first_arrival, now)
        study.series.setdefault(record.series_uid, {})[record.sop_instance_uid] = record
        study.received[record.sop_instance_uid] = None
        self._study_of_instance[record.sop_instance_uid] = record.study_uid
        return True

    def restore(
        self,
        records: Iterable[InstanceRecord],
        last_arrival: float,
        first_arrival: float | None = None,
    ) -> None:
        """Reload a study's records (after a restart, or when a late instance re-opens it).

        ``first_arrival`` (default ``last_arrival``) is when the study became pending: the
        max-age clock keeps counting from there across a restart.
        """
        for record in records:
            self.add(record, last_arrival)
            if first_arrival is not None:
                study = self._studies[record.study_uid]
                study.first_arrival = min(study.first_arrival, first_arrival)

    def discard_instance(self, sop_instance_uid: str) -> None:
        """Forget one instance (it moved to another series or study); drop a study left empty."""
        study_uid = self._study_of_instance.pop(sop_instance_uid, None)
        if study_uid is None:
            return
        study = self._studies[study_uid]
        _forget(study, sop_instance_uid)
        if not study.series:
            del self._studies[study_uid]

    def __contains__(self, study_uid: object) -> bool:
        return study_uid in self._studies

    def __len__(self) -> int:
        return len(self._studies)

    def expect(self, study_uid: str, sop_instance_uids: Iterable[str], *, until: float) -> None:
        """A completed MPPS lists the study's instances; wait for missing ones until ``until``.

        Only for a study that has instances here; the caller handles a study with none.
        """
        study = self._studies[study_uid]
        study.expected = study.expected | frozenset(sop_instance_uids)
        study.expected_until = max(study.expected_until, until)

    def missing(self, study_uid: str) -> frozenset[str]:
        """Instances a completed MPPS listed that have not arrived."""
        study = self._studies[study_uid]
        return study.expected - study.present()

    def _due_at(self, study: _PendingStudy) -> tuple[float, str]:
        """When the study becomes due, and why."""
        if study.expected and study.expected <= study.present():
            return study.last_arrival, MPPS_COMPLETED
        quiet = study.last_arrival + self._quiet_period
        candidates = [(max(quiet, study.expected_until), QUIET_PERIOD)]
        if self._max_age:
            candidates.append((study.first_arrival + self._max_age, MAX_AGE))
        return min(candidates)

    def due(self, now: float) -> list[tuple[str, str]]:
        """(StudyInstanceUID, reason) of every due study, the longest due first."""
        ready = []
        for uid, study in self._studies.items():
            at, reason = self._due_at(study)
            if now >= at:
                ready.append((at, uid, reason))
        return [(uid, reason) for _, uid, reason in sorted(ready)]

    def next_due_at(self) -> float | None:
        """When the next study becomes due, or None when nothing is pending."""
        if not self._studies:
            return None
        return min(self._due_at(study)[0] for study in self._studies.values())

    def snapshot(self, study_uid: str) -> StudyState:
        """The study's current state in canonical order, with its instances latest first."""
        study = self._studies[study_uid]
        records = {uid: r for instances in study.series.values() for uid, r in instances.items()}
        latest = tuple(records[uid] for uid in reversed(study.received))
        series = (
            SeriesState(
                series_uid,
                tuple(sorted(instances.values(), key=_instance_order)),
                tuple(record for record in latest if record.series_uid == series_uid),
            )
            for series_uid, instances in study.series.items()
        )
        return StudyState(
            study_uid=study_uid,
            series=tuple(sorted(series, key=_series_order)),
            latest_first=latest,
        )

    def pop(self, study_uid: str) -> StudyState:
        """Remove a finished study and return its final state."""
        state = self.snapshot(study_uid)
        for record in state.instances:
            self._study_of_instance.pop(record.sop_instance_uid, None)
        del self._studies[study_uid]
        return state


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a final MPPS said about its study, for :func:`plan_finish`.

    COMPLETED lists the instances the study holds (wait for missing ones until ``saved_at`` plus
    the grace period); DISCONTINUED publishes whatever arrived, at once.
    """

    sop_instance_uid: str
    discontinued: bool
    expected: frozenset[str]
    saved_at: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A due study: its state, why it is due, and what a completed MPPS listed that is missing."""

    state: StudyState
    reason: str
    missing: frozenset[str]


@dataclass(frozen=True, slots=True)
class Clocks:
    """The completion settings: quiet period, maximum age (0 = none) and the MPPS grace period."""

    quiet_period: float
    max_age: float
    grace: float


def plan_finish(
    records: list[InstanceRecord],
    *,
    last_arrival: float,
    first_arrival: float,
    outcomes: Iterable[Outcome],
    clocks: Clocks,
    now: float,
) -> Plan | None:
    """The study's final state if it is due at ``now``, else None.

    ``records`` are the study's instances in order of reception (the journal's), so a process
    that saw none of them arrive decides exactly as the one that received them would.
    """
    if not records:
        return None
    study_uid = records[0].study_uid
    aggregator = Aggregator(quiet_period=clocks.quiet_period, max_age=clocks.max_age)
    aggregator.restore(records, last_arrival, first_arrival)
    present = [record.sop_instance_uid for record in records]
    for outcome in outcomes:
        if outcome.discontinued:
            aggregator.expect(study_uid, present, until=outcome.saved_at)
        else:
            aggregator.expect(study_uid, outcome.expected, until=outcome.saved_at + clocks.grace)
    due = aggregator.due(now)
    if not due:
        return None
    missing = aggregator.missing(study_uid)
    return Plan(aggregator.pop(study_uid), due[0][1], missing)
