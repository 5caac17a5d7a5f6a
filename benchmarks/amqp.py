"""The broker side: a unique exchange and queue per run; a reader timing ImagingStudy arrivals."""

from __future__ import annotations

import collections
import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pika
import pika.exceptions

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
POLL_SECONDS = 0.01


@dataclass
class Topology:
    """A unique exchange and queue on the broker for one benchmark run."""

    url: str = DEFAULT_URL
    exchange: str = field(default_factory=lambda: f"bench-x-{uuid.uuid4().hex[:10]}")
    queue: str = field(default_factory=lambda: f"bench-q-{uuid.uuid4().hex[:10]}")

    def listener_env(self) -> dict[str, str]:
        """The listener's environment settings for this topology."""
        return {
            "LISTENER_AMQP__URL": self.url,
            "LISTENER_AMQP__EXCHANGE": self.exchange,
            "LISTENER_AMQP__QUEUE": self.queue,
        }

    def check(self) -> None:
        """Raise when the broker does not accept a connection."""
        pika.BlockingConnection(pika.URLParameters(self.url)).close()

    def delete(self) -> None:
        """Delete the queue and the exchange (missing ones are fine)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            for delete, name in ((_delete_queue, self.queue), (_delete_exchange, self.exchange)):
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                    delete(connection.channel(), name)
        finally:
            connection.close()


def _delete_queue(channel: Any, name: str) -> None:
    """Delete queue ``name``."""
    channel.queue_delete(name)


def _delete_exchange(channel: Any, name: str) -> None:
    """Delete exchange ``name``."""
    channel.exchange_delete(name)


@dataclass(frozen=True)
class Arrival:
    """One consumed ImagingStudy: when it arrived (``time.monotonic()``) and its counts."""

    at: float
    instance_count: int
    series_count: int
    body_bytes: int


def arrival(properties: Any, body: bytes, at: float) -> tuple[str, Arrival]:
    """The study UID and arrival record of one message consumed at ``at``."""
    headers: dict[str, Any] = properties.headers or {}
    resource: dict[str, Any] = json.loads(body)
    instances = headers.get("instance_count", resource.get("numberOfInstances", 0))
    series = headers.get("series_count", resource.get("numberOfSeries", 0))
    uid = str(headers.get("study_instance_uid", resource.get("id", "")))
    return uid, Arrival(at, int(instances), int(series), len(body))


class StudyReader:
    """Consumes the run's queue and records when each study's message arrived.

    Use it as a context manager around one phase: an idle blocking connection would miss broker
    heartbeats during long sends.
    """

    def __init__(self, topology: Topology, *, queue_timeout: float = 30.0) -> None:
        self._connection = pika.BlockingConnection(pika.URLParameters(topology.url))
        self._queue = topology.queue
        self._channel = self._await_queue(queue_timeout)
        self._messages = self._channel.consume(
            self._queue, auto_ack=True, inactivity_timeout=POLL_SECONDS
        )
        self.arrived: dict[str, Arrival] = {}  # the first message of each study
        self.messages: collections.Counter[str] = collections.Counter()  # messages per study

    def _await_queue(self, timeout: float) -> Any:
        """A channel, once the listener has declared the queue."""
        deadline = time.monotonic() + timeout
        while True:
            channel = self._connection.channel()
            try:
                channel.queue_declare(self._queue, passive=True)
                return channel
            except pika.exceptions.ChannelClosedByBroker:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self) -> StudyReader:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the consumer and close the connection."""
        with contextlib.suppress(pika.exceptions.AMQPError):
            self._channel.cancel()
            self._connection.close()

    def wait(self, study_uids: Iterable[str], *, timeout: float) -> dict[str, Arrival]:
        """Consume until every study in ``study_uids`` arrived or ``timeout`` passed."""
        wanted = set(study_uids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.arrived.keys() and time.monotonic() < deadline:
            self._consume_one()
        return {uid: self.arrived[uid] for uid in wanted if uid in self.arrived}

    def drain(self, seconds: float) -> None:
        """Consume whatever arrives for ``seconds`` (late or duplicate messages get counted)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._consume_one()

    def _consume_one(self) -> None:
        """Record the next message, if one arrives within the poll interval."""
        method, properties, body = next(self._messages)
        if method is not None:
            uid, record = arrival(properties, body, time.monotonic())
            self.arrived.setdefault(uid, record)
            self.messages[uid] += 1


def publication_problem(record: Arrival | None, count: int, timeout: float) -> str:
    """Why a study's ImagingStudy does not confirm ``count`` stored instances, or ""."""
    if record is None:
        return f"no ImagingStudy within {timeout} s"
    if record.instance_count != count:
        return f"ImagingStudy lists {record.instance_count}/{count} instances"
    return ""
