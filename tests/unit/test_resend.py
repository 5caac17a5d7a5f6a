"""Re-sent SOP instances: content digests, storage.on_changed_instance, versions and files."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest

from listener import fhir
from listener.aggregator import Aggregator
from listener.instance_files import content_digest
from listener.journal import Journal
from listener.model import InstanceRecord, Resend, StoreOutcome, compare_resend
from listener.scp.contexts import COMMENT_FOR_OUTCOME, STATUS_FOR_OUTCOME
from listener.service import ListenerService
from tests.support import PYDICOM_TEST_FILES
from tests.unit.test_service import FakeClock, FakePublisher, make_service, spooled

CT_SMALL = PYDICOM_TEST_FILES / "CT_small.dcm"
POLICIES = ["new-version", "keep-first", "reject"]
HELD = InstanceRecord(
    study_uid="1.2", series_uid="1.2.1", sop_instance_uid="1.2.1.1", sop_class_uid="1.2.3"
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- pure: comparing with the held record ----------------------------------------------------


def test_same_digest_and_transfer_syntax_is_identical() -> None:
    """Equal dataset digests in the same transfer syntax: an identical re-send."""
    held = replace(HELD, digest="aa", transfer_syntax_uid="1.2.840.10008.1.2.1")

    assert compare_resend(held, replace(held, file="", size=0)) is Resend.IDENTICAL
    assert compare_resend(None, held) is Resend.NEW


def test_the_same_instance_stored_by_another_node_is_no_change() -> None:
    """Which node holds the file is storage, not content: a re-send elsewhere stays identical."""
    received = replace(HELD, node="node-b", file="1.2/1.2.1/1.2.1.1.dcm", size=10)

    assert compare_resend(replace(HELD, node="node-a"), received) is Resend.IDENTICAL


def test_other_pixels_under_the_same_header_are_a_change() -> None:
    """Only the digest differs: changed, although every header field is equal."""
    assert compare_resend(replace(HELD, digest="aa"), replace(HELD, digest="bb")) is Resend.CHANGED


def test_a_record_from_before_digests_is_compared_by_its_header() -> None:
    """A held record without digest (journal schema < 4): equal headers are identical."""
    received = replace(HELD, digest="bb", file="x.dcm", size=9)

    assert compare_resend(HELD, received) is Resend.IDENTICAL
    assert compare_resend(HELD, replace(received, series_description="x")) is Resend.CHANGED


def test_mapped_series_takes_its_description_from_the_latest_instance() -> None:
    """In the ImagingStudy, a later re-send of instance 2 relabels the series instance 1 opened."""
    aggregator = Aggregator(quiet_period=1)
    first = replace(HELD, instance_number=1, series_description="Original", series_number=1)
    second = replace(first, sop_instance_uid="1.2.1.2", instance_number=2)
    for number, item in enumerate((first, second, replace(second, series_description="New"))):
        aggregator.add(item, now=number)

    resource = fhir.imaging_study(
        aggregator.snapshot("1.2"), version=1, options=fhir.FhirOptions()
    ).resource

    assert resource["series"][0]["description"] == "New"


# -- the service, with real files ------------------------------------------------------------


def variant(tmp_path: Path, name: str, *, pixels: bool = False, **attributes: str) -> Path:
    """CT_small with ``attributes`` set and, with ``pixels``, one pixel byte inverted."""
    dataset = pydicom.dcmread(CT_SMALL)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if pixels:
        data = bytearray(dataset.PixelData)
        data[100] ^= 0xFF
        dataset.PixelData = bytes(data)
    target = tmp_path / f"{name}.dcm"
    dataset.save_as(target)
    return target


def policy_service(tmp_path: Path, clock: FakeClock, policy: str) -> ListenerService:
    return make_service(
        tmp_path, FakePublisher(), clock, LISTENER_STORAGE__ON_CHANGED_INSTANCE=policy
    )


def publish(tmp_path: Path, service: ListenerService, clock: FakeClock, path: Path) -> StoreOutcome:
    """Receive ``path`` and let the quiet period pass, finishing its study."""
    outcome = service.receive(spooled(tmp_path, path))
    clock.now += 10
    service.finish_due_studies()
    return outcome


def versions(service: ListenerService) -> list[dict[str, Any]]:
    """Every queued resource, oldest first (the outbox is drained as a broker would)."""
    resources = []
    while (message := service.journal.next_outbox()) is not None:
        resources.append(json.loads(message.body))
        service.journal.remove_outbox(message.id)
    return resources


def stored_files(tmp_path: Path) -> dict[str, list[Path]]:
    """SOP Instance UID -> the files under data_dir/instances holding it."""
    found: dict[str, list[Path]] = {}
    for path in (tmp_path / "data" / "instances").rglob("*.dcm"):
        found.setdefault(path.stem, []).append(path)
    return found


def only_file(tmp_path: Path) -> Path:
    [(_uid, [path])] = stored_files(tmp_path).items()
    return path


def same_content(stored: Path, sent: Path) -> bool:
    return content_digest(stored) == content_digest(sent)


@pytest.mark.parametrize("policy", POLICIES)
def test_identical_re_send_of_a_published_study_publishes_nothing(
    tmp_path: Path, clock: FakeClock, policy: str
) -> None:
    """Same bytes again: 0x0000 (duplicate), no new version, whatever the policy."""
    service = policy_service(tmp_path, clock, policy)
    base = variant(tmp_path, "base")
    publish(tmp_path, service, clock, base)

    assert publish(tmp_path, service, clock, base) is StoreOutcome.DUPLICATE
    assert [r["meta"]["versionId"] for r in versions(service)] == ["1"]


def test_changed_pixels_publish_a_new_version_under_new_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Same header, other pixel data: stored, and the published study gets version 2."""
    service = policy_service(tmp_path, clock, "new-version")
    publish(tmp_path, service, clock, variant(tmp_path, "base"))
    changed = variant(tmp_path, "pixels", pixels=True)

    assert publish(tmp_path, service, clock, changed) is StoreOutcome.STORED

    first, second = versions(service)
    assert second["meta"]["versionId"] == "2"
    assert {**first, "meta": {}} == {**second, "meta": {}}
    assert same_content(only_file(tmp_path), changed)


def test_changed_header_relabels_the_series_in_a_new_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A new SeriesDescription on a re-send is in the next version's series."""
    service = policy_service(tmp_path, clock, "new-version")
    publish(tmp_path, service, clock, variant(tmp_path, "base", SeriesDescription="Original"))

    relabelled = variant(tmp_path, "relabel", SeriesDescription="Corrected")
    assert publish(tmp_path, service, clock, relabelled) is StoreOutcome.STORED

    _first, second = versions(service)
    assert second["series"][0]["description"] == "Corrected"


REFUSALS = {
    "keep-first": (StoreOutcome.KEPT_FIRST, "changed instance ignored; stored version kept"),
    "reject": (StoreOutcome.CHANGED_REFUSED, "changed instance refused"),
}


@pytest.mark.parametrize("policy", sorted(REFUSALS))
def test_changed_re_send_keeps_the_stored_version(
    tmp_path: Path, clock: FakeClock, json_logs: Callable[[], list[dict[str, Any]]], policy: str
) -> None:
    """keep-first and reject leave file, record and published version as they were; logged."""
    service = policy_service(tmp_path, clock, policy)
    base = variant(tmp_path, "base")
    publish(tmp_path, service, clock, base)

    outcome, event = REFUSALS[policy]
    assert publish(tmp_path, service, clock, variant(tmp_path, "px", pixels=True)) is outcome

    assert same_content(only_file(tmp_path), base)
    assert [r["meta"]["versionId"] for r in versions(service)] == ["1"]
    [line] = [line for line in json_logs() if line["event"] == event]
    assert (line["change"], line["policy"]) == ("content", policy)


def test_statuses_of_the_changed_instance_outcomes() -> None:
    """keep-first acknowledges (0x0000); reject is 0x0110 with an Error Comment of <= 64 chars."""
    assert STATUS_FOR_OUTCOME[StoreOutcome.KEPT_FIRST] == 0x0000
    assert STATUS_FOR_OUTCOME[StoreOutcome.CHANGED_REFUSED] == 0x0110
    assert len(COMMENT_FOR_OUTCOME[StoreOutcome.CHANGED_REFUSED]) <= 64


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("move", ["series", "study"])
def test_moved_instance_leaves_exactly_one_file(
    tmp_path: Path, clock: FakeClock, policy: str, move: str
) -> None:
    """Re-sent under another series or study: one file for the SOP instance, where it belongs."""
    service = policy_service(tmp_path, clock, policy)
    base = variant(tmp_path, "base")
    publish(tmp_path, service, clock, base)
    other = "1.2.826.0.1.3680043.2.1125.99.8"
    moved = (
        variant(tmp_path, "moved", SeriesInstanceUID=other)
        if move == "series"
        else variant(tmp_path, "moved", StudyInstanceUID=other)
    )

    publish(tmp_path, service, clock, moved)

    [(_uid, [path])] = stored_files(tmp_path).items()
    expected = moved if policy == "new-version" else base
    assert same_content(path, expected)
    dataset = pydicom.dcmread(expected, stop_before_pixels=True)
    assert path.parent.name == dataset.SeriesInstanceUID
    assert path.parent.parent.name == dataset.StudyInstanceUID
    assert service.journal.stale_files() == []


def test_old_file_a_crash_left_behind_is_removed_at_start(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move is journaled but its old file not deleted: the next start deletes it."""
    service = policy_service(tmp_path, clock, "new-version")
    publish(tmp_path, service, clock, variant(tmp_path, "base"))

    def crash(path: str) -> None:
        raise OSError("simulated crash before the old file was deleted")

    monkeypatch.setattr(service._files, "remove", crash)
    moved = variant(tmp_path, "moved", SeriesInstanceUID="1.2.826.0.1.3680043.2.1125.99.9")
    assert service.receive(spooled(tmp_path, moved)) is StoreOutcome.STORED
    assert len(next(iter(stored_files(tmp_path).values()))) == 2
    service.journal.close()

    restarted = policy_service(tmp_path, clock, "new-version")
    restarted.start()
    restarted.stop(grace_seconds=1)

    assert [path.parent.name for [path] in stored_files(tmp_path).values()] == [
        "1.2.826.0.1.3680043.2.1125.99.9"
    ]


def test_identical_re_send_of_a_record_from_before_digests_is_a_duplicate(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After the upgrade to schema 4, a record without digest still recognises a plain re-send."""
    service = policy_service(tmp_path, clock, "new-version")
    base = variant(tmp_path, "base")
    publish(tmp_path, service, clock, base)
    service.journal.close()
    legacy = sqlite3.connect(tmp_path / "data" / "journal.sqlite3")
    [(record,)] = legacy.execute("SELECT record FROM instances").fetchall()
    legacy.execute(
        "UPDATE instances SET record = ?", (json.dumps(json.loads(record) | {"digest": ""}),)
    )
    legacy.commit()
    legacy.close()

    restarted = policy_service(tmp_path, clock, "new-version")

    assert publish(tmp_path, restarted, clock, base) is StoreOutcome.DUPLICATE
    assert len(versions(restarted)) == 1
    assert Journal(tmp_path / "data" / "journal.sqlite3").stale_files() == []


def test_only_a_new_sop_instance_is_moved_in_before_its_data_sync(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A first copy is moved in beside its data sync; a changed re-send only once synced."""
    service = policy_service(tmp_path, clock, "new-version")
    moved_before_the_wait: list[bool] = []

    def receive(path: Path) -> StoreOutcome:
        incoming = spooled(tmp_path, path)
        incoming = replace(
            incoming, synced=lambda: moved_before_the_wait.append(not incoming.path.exists())
        )
        return service.receive(incoming)

    assert receive(variant(tmp_path, "base")) is StoreOutcome.STORED
    assert receive(variant(tmp_path, "pixels", pixels=True)) is StoreOutcome.STORED

    assert moved_before_the_wait == [True, False]
