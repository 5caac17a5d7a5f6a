"""amqp.queue_type: quorum queues declared as asked, and a mismatch stops start-up in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pika
import pika.exceptions
import pytest

from listener.config import ConfigError, load_settings
from tests.conftest import ListenerFactory
from tests.support import PYDICOM_TEST_FILES, RABBITMQ_URL, AmqpTopology, free_port, storescu


def declare(queue: str, queue_type: str) -> str:
    """Declare ``queue`` durable with ``queue_type``; "ok" or the broker's refusal."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        connection.channel().queue_declare(
            queue, durable=True, arguments={"x-queue-type": queue_type}
        )
        return "ok"
    except pika.exceptions.ChannelClosedByBroker as exc:
        return f"{exc.reply_code} {exc.reply_text}"
    finally:
        if connection.is_open:
            connection.close()


def test_quorum_queue_is_declared_and_receives_the_imagingstudy(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """With amqp.queue_type = quorum the queue is a quorum queue and the study arrives on it."""
    listener = start_listener(LISTENER_AMQP__QUEUE_TYPE="quorum")

    assert storescu(listener.port, [PYDICOM_TEST_FILES / "CT_small.dcm"]).succeeded
    [message] = amqp.drain(1, timeout=30)

    assert message.resource["resourceType"] == "ImagingStudy"
    assert declare(amqp.queue, "quorum") == "ok"
    assert declare(amqp.queue, "classic").startswith("406")


def test_an_existing_queue_of_another_type_stops_start_up_in_one_line(
    amqp: AmqpTopology, tmp_path: Path
) -> None:
    """A classic queue already there when quorum is configured: exit 2, one line naming it."""
    assert declare(amqp.queue, "classic") == "ok"
    environment = {
        **os.environ,
        **amqp.env(),
        "LISTENER_AMQP__QUEUE_TYPE": "quorum",
        "LISTENER_DICOM__PORT": str(free_port()),
        "LISTENER_METRICS__ENABLED": "false",
        "LISTENER_STORAGE__DATA_DIR": str(tmp_path / "data"),
    }

    done = subprocess.run(
        [sys.executable, "-m", "listener", "run"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dicom-listener: configuration error:")
    assert "x-queue-type" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_queue_type_accepts_classic_and_quorum_only(queue_type: str) -> None:
    """Any other queue type is a configuration error naming amqp.queue_type."""
    assert load_settings(None, {"LISTENER_AMQP__QUEUE_TYPE": queue_type}).settings.amqp
    with pytest.raises(ConfigError, match=r"amqp\.queue_type"):
        load_settings(None, {"LISTENER_AMQP__QUEUE_TYPE": "stream"})
