"""The outbox relay: a message goes on the wire exactly as the journal holds it, then leaves it."""

from __future__ import annotations

import threading
from pathlib import Path

from listener.journal import Journal, OutboxMessage
from listener.metrics import Metrics
from listener.relay import OutboxRelay
from tests.support import wait_for
from tests.unit.test_service import FakePublisher


def test_outbox_message_is_published_as_journaled_then_removed(tmp_path: Path) -> None:
    """Body, message_id, headers and the finish time (whole seconds) reach the broker unchanged."""
    journal = Journal(tmp_path / "journal.sqlite3")
    queued = OutboxMessage(
        id=0,
        study_uid="1.2.3",
        version=2,
        message_id="1.2.3/v2",
        headers={"study_instance_uid": "1.2.3", "resource_version": 2},
        body=b'{"resourceType": "ImagingStudy"}',
        created_at=1_700_000_123.9,
    )
    journal.finish_study("1.2.3", digest="d", message=queued, finished_at=queued.created_at)
    publisher, metrics, stopping = FakePublisher(), Metrics(), threading.Event()
    relay = OutboxRelay(journal, publisher, backoff_max_seconds=1, metrics=metrics)
    thread = threading.Thread(target=relay.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: journal.outbox_depth() == 0, timeout=10, what="the outbox to drain")
    finally:
        stopping.set()
        thread.join(timeout=10)

    [sent] = publisher.messages
    assert sent.body == queued.body and sent.message_id == queued.message_id
    assert sent.headers == queued.headers
    assert sent.timestamp == 1_700_000_123
    for counter in ("studies_published_total", "studies_republished_total"):
        assert metrics.registry.get_sample_value(f"dicom_listener_{counter}") == 1
