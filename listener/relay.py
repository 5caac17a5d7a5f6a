"""The publish loop: drains the journal's outbox, in order, into a Publisher.

A message leaves the outbox only after the broker confirmed it. While the broker is unreachable
the loop retries with capped exponential backoff and logs once when publishing fails and once
when it resumes, not on every attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from listener.journal import JournalError, JournalStore, OutboxMessage
from listener.logging import get_logger
from listener.metrics import Metrics
from listener.publisher import Message, Publisher, PublishError

log = get_logger("listener.relay")

BACKOFF_FIRST_SECONDS = 0.5


class OutboxRelay:
    """Runs in its own thread; the Publisher is created, used and closed by that thread only."""

    def __init__(
        self,
        journal: JournalStore,
        publisher: Publisher,
        *,
        backoff_max_seconds: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._publisher = publisher
        self._backoff_max = backoff_max_seconds
        self._metrics = metrics
        self._clock = clock
        self._wake = threading.Event()
        self.broker_connected = False

    def _connect(self) -> None:
        try:
            self._publisher.connect()
        finally:
            self.broker_connected = self._publisher.connected

    def notify(self) -> None:
        """Tell the loop that the outbox has a new message."""
        self._wake.set()

    def run(self, stopping: threading.Event) -> None:
        """Publish until ``stopping`` is set, then close the publisher."""
        backoff, healthy = BACKOFF_FIRST_SECONDS, True
        try:
            while not stopping.is_set():
                try:
                    self._connect()
                    published = self._publish_next()
                except (PublishError, JournalError) as exc:
                    self._metrics.publish_failures.inc()
                    if healthy:
                        log.error("publishing failed; retrying with backoff", error=str(exc))
                    healthy = False
                    stopping.wait(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                    continue
                if not healthy:
                    log.info("publishing resumed", outbox=self._journal.outbox_depth())
                backoff, healthy = BACKOFF_FIRST_SECONDS, True
                if not published:
                    self._publisher.idle(0)
                    self.broker_connected = self._publisher.connected
                    self._wake.wait(0.2)
        finally:
            self._publisher.close()
            self.broker_connected = False

    def _publish_next(self) -> bool:
        """Publish the oldest outbox message; False when the outbox is empty."""
        self._wake.clear()
        message = self._journal.next_outbox()
        if message is None:
            return False
        self._publisher.publish(_wire_message(message))
        self._journal.remove_outbox(message.id)
        self._metrics.studies_published.inc()
        if message.version > 1:
            self._metrics.studies_republished.inc()
        self._metrics.publish_latency_seconds.observe(max(0.0, self._clock() - message.created_at))
        log.info(
            "study published",
            study_uid=message.study_uid,
            version=message.version,
            message_id=message.message_id,
            series=message.headers.get("series_count"),
            instances=message.headers.get("instance_count"),
        )
        return True


def _wire_message(message: OutboxMessage) -> Message:
    return Message(
        body=message.body,
        message_id=message.message_id,
        headers=message.headers,
        timestamp=int(message.created_at),
    )
