"""The publish loop: drains the journal's outbox, in order per study, into a Publisher.

Several relays (``dicom.workers``, other nodes) may drain one journal: each takes the oldest
message whose study has no older one waiting and holds it for :data:`LEASE_SECONDS`, so a study's
versions go out in order and no two relays publish the same message at once (a relay that dies
mid-publish lets its message go again after the lease: at least once, same ``message_id``).

A message leaves the outbox only after the broker confirmed it. While the broker is unreachable
the loop retries with capped exponential backoff (``amqp.reconnect_max_seconds``) and, between
attempts, checks the broker's TCP port every half second: once a port that refused starts to
answer, it retries at once instead of sleeping out the backoff. A lost connection is one WARNING,
its return one INFO, each failed attempt a DEBUG line; other failures (a nack, the journal) are
one ERROR when they start and one INFO when publishing resumes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from listener.journal_api import JournalError, JournalStore, OutboxMessage
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.publisher import Message, Publisher, PublishError

log = get_logger("listener.relay")

BACKOFF_FIRST_SECONDS = 0.5
LEASE_SECONDS = 30.0
PROBE_INTERVAL_SECONDS = 0.5


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
        holder: str = "",
    ) -> None:
        self._journal = journal
        self._holder = holder
        self._publisher = publisher
        self._backoff_max = backoff_max_seconds
        self._metrics = metrics
        self._clock = clock
        self._wake = threading.Event()
        self.broker_connected = False
        self._broker_lost = False

    def _connect(self) -> None:
        self._publisher.connect()
        self._update_connected()

    def _update_connected(self, error: str = "") -> None:
        """Track the connection; log its loss once (WARNING) and its return once (INFO)."""
        connected = self._publisher.connected
        self.broker_connected = connected
        if connected and self._broker_lost:
            self._broker_lost = False
            log.info("broker connection restored", outbox=self._journal.outbox_depth())
        elif not connected and not self._broker_lost:
            self._broker_lost = True
            log.warning("broker connection lost; retrying", error=error or None)

    def _wait_to_retry(self, stopping: threading.Event, seconds: float) -> None:
        """Wait out the backoff, or less: until a broker port that refused answers again.

        Only a port that refused (now, or at a probe during the wait) arms the early retry: a
        broker that answers TCP but refuses the login is retried at the backoff's pace.
        """
        deadline = time.monotonic() + seconds
        refused = not self._publisher.reachable()
        while (left := deadline - time.monotonic()) > 0:
            if stopping.wait(min(PROBE_INTERVAL_SECONDS, left)):
                return
            if self._publisher.reachable():
                if refused:
                    log.debug("broker port answers again; reconnecting now")
                    return
            else:
                refused = True

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
                    self._update_connected(str(exc))
                    if not self.broker_connected:
                        log.debug("broker attempt failed", error=str(exc), retry_in=backoff)
                    elif healthy:
                        log.error("publishing failed; retrying with backoff", error=str(exc))
                        healthy = False
                    self._wait_to_retry(stopping, backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                    continue
                if not healthy:
                    log.info("publishing resumed", outbox=self._journal.outbox_depth())
                backoff, healthy = BACKOFF_FIRST_SECONDS, True
                if not published:
                    self._publisher.idle(0)
                    self._update_connected()
                    self._wake.wait(0.2)
        finally:
            self._publisher.close()
            self.broker_connected = False

    def _publish_next(self) -> bool:
        """Publish the oldest outbox message; False when the outbox is empty."""
        self._wake.clear()
        now = self._clock()
        message = self._journal.next_outbox(
            now=now, lease_until=now + LEASE_SECONDS, holder=self._holder
        )
        if message is None:
            return False
        try:
            self._publisher.publish(_wire_message(message))
        except PublishError:
            with contextlib.suppress(JournalError):  # else its lease lapses by itself
                self._journal.release_outbox(message.id)
            raise
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
