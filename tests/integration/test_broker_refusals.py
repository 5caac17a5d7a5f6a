"""Guarantee "the outbox keeps a study until the broker confirms it": nacks and returns keep it.

A broker that is up can still refuse a message: a queue at its length limit with
``x-overflow: reject-publish`` nacks it, and a message no queue is bound for comes back (it is
published ``mandatory``). Either way the study stays in the outbox and is delivered once possible.
"""

from __future__ import annotations

import contextlib

import pika

from tests.conftest import ListenerFactory
from tests.modality import Modality, make_study
from tests.support import (
    RABBITMQ_URL,
    AmqpTopology,
    ListenerProcess,
    http_get,
    metric_value,
    wait_for,
)

FILLER = b"filler: the queue is full"


def refused_and_kept(listener: ListenerProcess) -> bool:
    """The broker refused at least one publish and the study is still in the outbox."""
    metrics = http_get(f"{listener.metrics_url}/metrics")[1]
    return (
        metric_value(metrics, "dicom_listener_publish_failures_total") >= 1
        and metric_value(metrics, "dicom_listener_outbox_depth") == 1
    )


def send_one_study(start_listener: ListenerFactory) -> tuple[ListenerProcess, str]:
    """A listener declaring no queue of its own, and one finished study for it to publish."""
    listener = start_listener(
        quiet_period=0.3, LISTENER_AMQP__QUEUE="", LISTENER_AMQP__RECONNECT_MAX_SECONDS="1"
    )
    study = make_study(1, series=1)
    modality = Modality(listener.port)
    modality.send_all(study)
    assert modality.acked == [str(study[0].SOPInstanceUID)]
    return listener, str(study[0].StudyInstanceUID)


def declare_queue(amqp: AmqpTopology, arguments: dict[str, object] | None = None) -> None:
    """Declare the test's queue (with ``arguments``) and bind it to the listener's exchange."""
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))) as conn:
        channel = conn.channel()
        channel.exchange_declare(amqp.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(amqp.queue, durable=True, arguments=arguments)
        channel.queue_bind(amqp.queue, amqp.exchange, routing_key=amqp.routing_key)


def test_nacked_study_stays_in_the_outbox_until_the_queue_has_room(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A queue at its limit (reject-publish) nacks the study; it is delivered once there is room."""
    declare_queue(amqp, {"x-max-length": 1, "x-overflow": "reject-publish"})
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))) as conn:
        conn.channel().basic_publish(amqp.exchange, amqp.routing_key, FILLER)
    listener, study_uid = send_one_study(start_listener)

    wait_for(lambda: refused_and_kept(listener), timeout=20, what="a nack and a kept outbox row")
    filler, study = amqp.drain(2, timeout=20)  # taking the filler makes room for the study

    assert filler.body == FILLER
    assert study.resource["id"] == study_uid


def test_returned_study_stays_in_the_outbox_until_a_queue_is_bound(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A study no queue is bound for comes back (mandatory); it is delivered once one is bound."""
    listener, study_uid = send_one_study(start_listener)

    wait_for(lambda: refused_and_kept(listener), timeout=20, what="a return and a kept outbox row")
    declare_queue(amqp)
    [study] = amqp.drain(1, timeout=20)

    assert study.resource["id"] == study_uid
