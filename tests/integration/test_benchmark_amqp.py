"""The benchmarks' queue reader against the real RabbitMQ: what "one message per study" rests on."""

from __future__ import annotations

import json

import pika

from benchmarks.amqp import StudyReader, Topology
from tests.support import RABBITMQ_URL, require_broker

UID = "1.2.826.0.1.3680043.8.498.1"


def _publish(
    channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, count: int
) -> None:
    """One ImagingStudy-like message for ``UID`` listing ``count`` instances."""
    headers = {"study_instance_uid": UID, "instance_count": count, "series_count": 1}
    body = json.dumps({"resourceType": "ImagingStudy", "numberOfInstances": count}).encode()
    channel.basic_publish("", queue, body, pika.BasicProperties(headers=headers))


def test_study_reader_counts_a_second_message_for_the_same_study() -> None:
    """Both messages of one study are counted; the first one's record is the study's arrival."""
    require_broker()
    topology = Topology(RABBITMQ_URL)
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    channel.queue_declare(topology.queue)
    try:
        _publish(channel, topology.queue, 3)
        _publish(channel, topology.queue, 5)
        with StudyReader(topology) as reader:
            reader.wait([UID], timeout=10)
            reader.drain(1.0)  # a window to consume in, on a local broker
        assert reader.messages[UID] == 2
        assert reader.arrived[UID].instance_count == 3
    finally:
        channel.queue_delete(topology.queue)
        connection.close()
