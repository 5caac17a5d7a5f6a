"""Publishing ImagingStudy messages to RabbitMQ: the Publisher protocol and its pika implementation.

pika's BlockingConnection is not thread-safe, so a :class:`PikaPublisher` is created, used and
closed by one thread: the service's publish loop. Every publish waits for the broker's confirm.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

CONTENT_TYPE = "application/fhir+json"
REACHABLE_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Message:
    """What goes on the wire for one study version."""

    body: bytes
    message_id: str
    headers: dict[str, Any]
    timestamp: int


def broker_tls_context(*, ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS for amqps://: verify the broker (ca_file, else system CAs), optional client cert."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class PublishError(Exception):
    """The broker did not confirm the message; the caller keeps it and retries later."""


class TopologyMismatch(PublishError):
    """The exchange or queue exists with other properties (e.g. a classic queue, quorum wanted).

    Retrying cannot help: an operator must change the settings or the broker.
    """


PRECONDITION_FAILED = 406  # AMQP reply code for an inequivalent re-declaration


class Publisher(Protocol):
    """A destination for finished studies."""

    @property
    def connected(self) -> bool:
        """True while the destination is reachable as far as we know."""

    def connect(self) -> None:
        """Connect (if not connected) or raise PublishError."""

    def publish(self, message: Message) -> None:
        """Deliver ``message``; return once the broker confirmed it, else raise PublishError."""

    def idle(self, seconds: float) -> None:
        """Wait up to ``seconds`` while keeping the connection alive (heartbeats)."""

    def reachable(self) -> bool:
        """A cheap check (no login) that the destination answers at all, between reconnects."""

    def close(self) -> None:
        """Release the connection."""


class PikaPublisher:
    """Publishes with confirms, ``mandatory`` and persistent delivery; reconnects on demand.

    The exchange (topic, durable), the queue (durable, unless ``queue`` is empty) and the binding
    are declared on every (re)connect, so a broker that lost its definitions gets them back.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        routing_key: str,
        queue: str,
        queue_type: str = "classic",
        connect_timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._parameters = pika.URLParameters(url)
        if tls is not None:
            self._parameters.ssl_options = pika.SSLOptions(tls, self._parameters.host)
        self._parameters.socket_timeout = connect_timeout
        self._parameters.blocked_connection_timeout = 30
        self._exchange = exchange
        self._routing_key = routing_key
        self._queue = queue
        self._queue_arguments = {"x-queue-type": queue_type}
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @property
    def connected(self) -> bool:
        """True while a connection and channel are open."""
        return bool(
            self._connection
            and self._connection.is_open
            and self._channel
            and self._channel.is_open
        )

    def connect(self) -> None:
        """Open the connection and declare the topology, or raise PublishError."""
        if self.connected:
            return
        self.close()
        try:
            self._connection = pika.BlockingConnection(self._parameters)
            channel = self._connection.channel()
            channel.exchange_declare(self._exchange, exchange_type="topic", durable=True)
            if self._queue:
                channel.queue_declare(self._queue, durable=True, arguments=self._queue_arguments)
                channel.queue_bind(self._queue, self._exchange, routing_key=self._routing_key)
            channel.confirm_delivery()
            self._channel = channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            if exc.reply_code == PRECONDITION_FAILED:
                raise TopologyMismatch(
                    f"the broker's exchange or queue differs from amqp.*: {exc.reply_text}"
                ) from exc
            raise PublishError(f"cannot connect to the broker: {_describe(exc)}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise PublishError(f"cannot connect to the broker: {_describe(exc)}") from exc

    def publish(self, message: Message) -> None:
        """Publish and wait for the confirm."""
        self.connect()
        assert self._channel is not None
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            headers=message.headers,
            timestamp=message.timestamp,
            type="ImagingStudy",
            app_id="dicom-listener",
        )
        try:
            self._channel.basic_publish(
                self._exchange, self._routing_key, message.body, properties, mandatory=True
            )
        except pika.exceptions.UnroutableError as exc:
            raise PublishError("message unroutable: no queue is bound to the routing key") from exc
        except pika.exceptions.NackError as exc:
            raise PublishError("broker refused the message (nack)") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise PublishError(f"connection lost while publishing: {_describe(exc)}") from exc

    def idle(self, seconds: float) -> None:
        """Serve heartbeats for up to ``seconds``; close a dead connection for the next connect."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(time_limit=seconds)
        except (pika.exceptions.AMQPError, OSError):
            self.close()

    def reachable(self) -> bool:
        """True when the broker's TCP port accepts a connection (a TCP handshake, no AMQP)."""
        address = (self._parameters.host, self._parameters.port)
        try:
            with socket.create_connection(address, timeout=REACHABLE_TIMEOUT_SECONDS):
                return True
        except OSError:
            return False

    def close(self) -> None:
        """Close the connection, ignoring a connection that is already gone."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
