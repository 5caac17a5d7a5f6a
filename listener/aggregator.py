"""Study state built incrementally from instance records; decides when a study is finished.

Pure: the caller passes the current time, so tests drive it with a fake clock and recovery can
replay journal records with their original arrival times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from listener.model import InstanceRecord, SeriesState, StudyState


@dataclass
class _PendingStudy:
    last_arrival: float
    series: dict[str, dict[str, InstanceRecord]] = field(default_factory=dict)


def _instance_order(record: InstanceRecord) -> tuple[bool, int, str]:
    number = record.instance_number
    return (number is None, number or 0, record.sop_instance_uid)


def _series_order(series: SeriesState) -> tuple[bool, int, str]:
    number = series.instances[0].series_number if series.instances else None
    return (number is None, number or 0, series.series_uid)


class Aggregator:
    """Pending studies by StudyInstanceUID, their series by UID, their instances by SOP UID.

    The same SOP Instance UID added twice is one instance (the later record replaces the earlier);
    a study is due once ``quiet_period`` seconds have passed since its last new instance.
    """

    def __init__(self, *, quiet_period: float) -> None:
        self._quiet_period = quiet_period
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
            self.discard_instance(record.sop_instance_uid)
        study = self._studies.setdefault(record.study_uid, _PendingStudy(last_arrival=now))
        study.last_arrival = max(study.last_arrival, now)
        study.series.setdefault(record.series_uid, {})[record.sop_instance_uid] = record
        self._study_of_instance[record.sop_instance_uid] = record.study_uid
        return True

    def restore(self, records: Iterable[InstanceRecord], last_arrival: float) -> None:
        """Reload a study's records (after a restart, or when a late instance re-opens it)."""
        for record in records:
            self.add(record, last_arrival)

    def discard_instance(self, sop_instance_uid: str) -> None:
        """Forget one instance (it moved to another series or study); drop a study left empty."""
        study_uid = self._study_of_instance.pop(sop_instance_uid, None)
        if study_uid is None:
            return
        study = self._studies[study_uid]
        for series_uid, instances in list(study.series.items()):
            if instances.pop(sop_instance_uid, None) is not None and not instances:
                del study.series[series_uid]
        if not study.series:
            del self._studies[study_uid]

    def __contains__(self, study_uid: object) -> bool:
        return study_uid in self._studies

    def __len__(self) -> int:
        return len(self._studies)

    def due(self, now: float) -> list[str]:
        """StudyInstanceUIDs whose quiet period has elapsed, oldest last arrival first."""
        ready = [
            (study.last_arrival, uid)
            for uid, study in self._studies.items()
            if now - study.last_arrival >= self._quiet_period
        ]
        return [uid for _, uid in sorted(ready)]

    def next_due_at(self) -> float | None:
        """When the next study becomes due, or None when nothing is pending."""
        if not self._studies:
            return None
        return min(study.last_arrival for study in self._studies.values()) + self._quiet_period

    def snapshot(self, study_uid: str) -> StudyState:
        """The study's current state in canonical order."""
        study = self._studies[study_uid]
        series = (
            SeriesState(series_uid, tuple(sorted(instances.values(), key=_instance_order)))
            for series_uid, instances in study.series.items()
        )
        return StudyState(study_uid=study_uid, series=tuple(sorted(series, key=_series_order)))

    def pop(self, study_uid: str) -> StudyState:
        """Remove a finished study and return its final state."""
        state = self.snapshot(study_uid)
        for record in state.instances:
            self._study_of_instance.pop(record.sop_instance_uid, None)
        del self._studies[study_uid]
        return state
