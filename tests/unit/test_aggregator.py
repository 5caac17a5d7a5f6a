"""The aggregator: study -> series -> instances, deduplication, and the quiet period."""

from __future__ import annotations

from dataclasses import replace

from listener.aggregator import Aggregator
from listener.model import InstanceRecord


def record(study: str, series: str, sop: str, number: int | None = None) -> InstanceRecord:
    return InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=number,
    )


def due(aggregator: Aggregator, now: float) -> list[str]:
    return [uid for uid, _reason in aggregator.due(now)]


def test_same_sop_instance_twice_is_one_instance() -> None:
    """Re-sending an identical instance neither adds it twice nor counts as new."""
    aggregator = Aggregator(quiet_period=10)

    assert aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    assert not aggregator.add(record("1", "1.1", "1.1.1"), now=1)

    assert aggregator.snapshot("1").number_of_instances == 1


def test_changed_instance_replaces_the_earlier_record() -> None:
    """A second version of the same SOP instance replaces the first."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(record("1", "1.1", "1.1.1", number=1), now=0)

    assert aggregator.add(record("1", "1.1", "1.1.1", number=7), now=1)

    [instance] = aggregator.snapshot("1").instances
    assert instance.instance_number == 7


def test_out_of_order_arrival_gives_canonical_order() -> None:
    """Series and instances are ordered by number then UID, whatever the arrival order."""
    aggregator = Aggregator(quiet_period=10)
    arrivals = [
        replace(record("1", "1.2", "1.2.2", 2), series_number=2),
        replace(record("1", "1.1", "1.1.3", 3), series_number=1),
        replace(record("1", "1.2", "1.2.1", 1), series_number=2),
        replace(record("1", "1.1", "1.1.1", 1), series_number=1),
    ]
    forward, backward = Aggregator(quiet_period=10), Aggregator(quiet_period=10)
    for index, item in enumerate(arrivals):
        forward.add(item, now=index)
        backward.add(arrivals[-1 - index], now=index)
        aggregator.add(item, now=index)

    state = forward.snapshot("1")
    assert [s.series_uid for s in state.series] == ["1.1", "1.2"]
    assert [r.sop_instance_uid for r in state.instances] == ["1.1.1", "1.1.3", "1.2.1", "1.2.2"]
    assert backward.snapshot("1").instances == state.instances
    assert [s.series_uid for s in backward.snapshot("1").series] == ["1.1", "1.2"]


def test_interleaved_studies_aggregate_separately() -> None:
    """Instances of two studies arriving alternately end up in their own studies."""
    aggregator = Aggregator(quiet_period=10)
    for index in range(6):
        study = "1" if index % 2 == 0 else "2"
        aggregator.add(record(study, f"{study}.1", f"{study}.1.{index}"), now=index)

    assert aggregator.snapshot("1").number_of_instances == 3
    assert aggregator.snapshot("2").number_of_instances == 3
    assert {r.study_uid for r in aggregator.snapshot("2").instances} == {"2"}


def test_study_spanning_two_associations_stays_one_study() -> None:
    """A study continued later (another association, within the quiet period) is one study."""
    aggregator = Aggregator(quiet_period=5)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    aggregator.add(record("1", "1.2", "1.2.1"), now=4)

    assert due(aggregator, 6) == []
    assert due(aggregator, 9) == ["1"]
    assert len(aggregator.pop("1").series) == 2


def test_study_is_due_only_after_the_quiet_period() -> None:
    """A study is finished exactly quiet_period seconds after its last new instance."""
    aggregator = Aggregator(quiet_period=1.5)
    aggregator.add(record("1", "1.1", "1.1.1"), now=100.0)

    assert due(aggregator, 101.4) == []
    assert due(aggregator, 101.5) == ["1"]
    assert aggregator.next_due_at() == 101.5


def test_new_instance_restarts_the_quiet_period_but_a_duplicate_does_not() -> None:
    """Only a new or changed instance pushes the study's finish time back."""
    aggregator = Aggregator(quiet_period=2)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    aggregator.add(record("1", "1.1", "1.1.1"), now=1.5)
    assert due(aggregator, 2) == ["1"]

    aggregator.add(record("1", "1.1", "1.1.2"), now=1.9)
    assert due(aggregator, 2) == []
    assert due(aggregator, 3.9) == ["1"]


def test_due_studies_come_oldest_first() -> None:
    """Several due studies are returned in the order they went quiet."""
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record("b", "b.1", "b.1.1"), now=0.5)
    aggregator.add(record("a", "a.1", "a.1.1"), now=0.7)
    aggregator.add(record("c", "c.1", "c.1.1"), now=0.1)

    assert due(aggregator, 5) == ["c", "b", "a"]


def test_pop_removes_the_study() -> None:
    """A popped study is no longer pending; a later instance starts it afresh."""
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)

    aggregator.pop("1")

    assert "1" not in aggregator
    assert aggregator.next_due_at() is None
    assert aggregator.add(record("1", "1.1", "1.1.1"), now=5)


def test_instance_moving_to_another_study_leaves_the_first() -> None:
    """A SOP instance re-sent under a different study belongs only to the new one."""
    aggregator = Aggregator(quiet_period=1)
    aggregator.add(record("1", "1.1", "9.9"), now=0)
    aggregator.add(record("1", "1.1", "1.1.2"), now=0)

    aggregator.add(record("2", "2.1", "9.9"), now=1)

    assert [r.sop_instance_uid for r in aggregator.snapshot("1").instances] == ["1.1.2"]
    assert [r.sop_instance_uid for r in aggregator.snapshot("2").instances] == ["9.9"]


def test_study_whose_mpps_instances_all_arrived_is_due_at_once() -> None:
    """A completed MPPS listing exactly the received instances finishes the study immediately."""
    aggregator = Aggregator(quiet_period=600)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    aggregator.add(record("1", "1.1", "1.1.2"), now=1)

    aggregator.expect("1", ["1.1.1", "1.1.2"], until=900)

    assert aggregator.due(now=1.5) == [("1", "mpps-completed")]


def test_study_missing_mpps_instances_waits_for_the_later_of_quiet_and_grace() -> None:
    """With listed instances missing, the study is due at max(quiet period, MPPS grace)."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    aggregator.expect("1", ["1.1.1", "1.1.2"], until=25)

    assert due(aggregator, 12) == []
    assert aggregator.missing("1") == {"1.1.2"}
    assert aggregator.due(now=25) == [("1", "quiet-period")]


def test_missing_mpps_instance_arriving_completes_the_study() -> None:
    """The last listed instance arriving makes the study due without further waiting."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(record("1", "1.1", "1.1.1"), now=0)
    aggregator.expect("1", ["1.1.1", "1.1.2"], until=100)

    aggregator.add(record("1", "1.1", "1.1.2"), now=3)

    assert aggregator.due(now=3) == [("1", "mpps-completed")]


def test_study_older_than_max_age_is_due_even_while_instances_keep_coming() -> None:
    """max_age forces a study out although its quiet period never elapses."""
    aggregator = Aggregator(quiet_period=5, max_age=20)
    for second in range(0, 30, 2):
        aggregator.add(record("1", "1.1", f"1.1.{second}"), now=second)
        if second < 20:
            assert due(aggregator, second) == []

    assert aggregator.due(now=20) == [("1", "max-age")]


def test_restored_study_keeps_its_max_age_clock() -> None:
    """After a restart the max age counts from when the study became pending, not from recovery."""
    aggregator = Aggregator(quiet_period=10, max_age=30)
    aggregator.restore([record("1", "1.1", "1.1.1")], last_arrival=16, first_arrival=0)
    aggregator.add(record("1", "1.1", "1.1.2"), now=24)

    assert aggregator.due(now=29) == []
    assert aggregator.due(now=30) == [("1", "max-age")]


# -- re-sent instances -----------------------------------------------------------------------


def described(sop: str, number: int, description: str, digest: str = "") -> InstanceRecord:
    """An instance of series 1.1 of study 1 with a SeriesDescription (and a content digest)."""
    return replace(record("1", "1.1", sop, number), series_description=description, digest=digest)


def series_description(aggregator: Aggregator) -> str:
    """The description the mapping gives series 1.1 (from its most recently received instance)."""
    [series] = aggregator.snapshot("1").series
    return series.latest_first[0].series_description


def test_changed_header_on_any_instance_relabels_its_series() -> None:
    """A re-send with a new SeriesDescription relabels the series, whichever instance it is."""
    for resent in ("1.1.1", "1.1.2", "1.1.3"):
        aggregator = Aggregator(quiet_period=10)
        for number in (1, 2, 3):
            aggregator.add(described(f"1.1.{number}", number, "Original"), now=number)

        changed = described(resent, int(resent[-1]), "Corrected")
        assert aggregator.add(changed, now=5)

        assert series_description(aggregator) == "Corrected", resent
        assert aggregator.snapshot("1").number_of_instances == 3


def test_study_level_values_come_from_the_most_recently_received_instance() -> None:
    """The study's instances, latest first, start with the last one received."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(replace(described("1.1.2", 2, "A"), study_description="Old"), now=0)
    aggregator.add(replace(described("1.1.1", 1, "A"), study_description="Old"), now=1)
    aggregator.add(replace(described("1.1.2", 2, "A"), study_description="New"), now=2)

    state = aggregator.snapshot("1")

    assert [r.study_description for r in state.latest_first] == ["New", "Old"]
    assert [r.sop_instance_uid for r in state.instances] == ["1.1.1", "1.1.2"]


def test_changed_pixels_with_the_same_header_are_a_change_not_a_duplicate() -> None:
    """Only the content digest differs: the new record replaces the old one."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(described("1.1.1", 1, "A", digest="aaaa"), now=0)

    assert not aggregator.add(described("1.1.1", 1, "A", digest="aaaa"), now=1)
    assert aggregator.add(described("1.1.1", 1, "A", digest="bbbb"), now=2)
    [instance] = aggregator.snapshot("1").instances
    assert instance.digest == "bbbb"


def test_instance_moved_to_another_series_is_listed_once() -> None:
    """A re-send under another Series UID leaves the old series (dropped when emptied)."""
    aggregator = Aggregator(quiet_period=10)
    aggregator.add(record("1", "1.1", "1.1.1", 1), now=0)
    aggregator.add(record("1", "1.2", "1.2.1", 1), now=0)

    aggregator.add(record("1", "1.2", "1.1.1", 2), now=1)

    [series] = aggregator.snapshot("1").series
    assert series.series_uid == "1.2"
    assert [r.sop_instance_uid for r in series.instances] == ["1.2.1", "1.1.1"]


def test_changed_re_send_of_the_only_instance_keeps_the_study_clocks_and_mpps() -> None:
    """Replacing a study's only instance keeps its max-age clock and its MPPS expectation."""
    aggregator = Aggregator(quiet_period=10, max_age=30)
    aggregator.add(described("1.1.1", 1, "A"), now=0)
    aggregator.expect("1", ["1.1.1", "1.1.2"], until=100)

    aggregator.add(described("1.1.1", 1, "B"), now=20)

    assert aggregator.missing("1") == {"1.1.2"}
    assert aggregator.due(now=30) == [("1", "max-age")]


def test_restore_takes_records_in_reception_order() -> None:
    """Records restored oldest first: the last one defines the series, as when received live."""
    aggregator = Aggregator(quiet_period=10)

    aggregator.restore([described("1.1.1", 1, "Old"), described("1.1.2", 2, "New")], 5)

    assert series_description(aggregator) == "New"
