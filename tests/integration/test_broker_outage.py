"""A real RabbitMQ outage: what the listener logs, and how soon it publishes once the broker is up.

The outage is ``rabbitmqctl stop_app``, then ``start_app``: the broker itself, not a proxy.

The broker is shared with every other test on the machine: the outage lasts seconds, the app is
always started again in a ``finally``, and the tests are marked ``broker_outage`` (run serially).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import ListenerFactory
from tests.modality import Modality, make_study
from tests.support import AmqpTopology, ListenerProcess, http_get, metric_value, wait_for

pytestmark = [
    pytest.mark.broker_outage,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's CLI"),
]

RECONNECT_CAP_SECONDS = 5.0  # amqp.reconnect_max_seconds, the default


def _rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)


@contextmanager
def broker_stopped() -> Iterator[None]:
    """The broker's app stopped for the block; started again whatever happens."""
    _rabbitmqctl("stop_app")
    try:
        yield
    finally:
        _rabbitmqctl("start_app")


def _broker_connected(listener: ListenerProcess) -> float:
    return metric_value(
        http_get(f"{listener.metrics_url}/metrics")[1], "dicom_listener_broker_connected"
    )


def test_outage_logs_one_warning_one_info_and_publishes_within_the_cap(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Lost: one WARNING; back: one INFO; no ERROR or traceback; published within the cap."""
    listener = start_listener(quiet_period=0.3)
    wait_for(lambda: _broker_connected(listener) == 1, timeout=20, what="broker connected")
    before = len(listener.logs())
    study = make_study(2, series=1)

    with broker_stopped():
        wait_for(lambda: _broker_connected(listener) == 0, timeout=20, what="loss noticed")
        assert http_get(f"{listener.metrics_url}/readyz") == (200, "ready\n")
        Modality(listener.port).send_all(study)
        wait_for(lambda: any(listener.events("study finished")), timeout=20, what="finished")
    back = time.monotonic()
    amqp.drain(1, timeout=30)
    delay = time.monotonic() - back

    outage: list[dict[str, Any]] = listener.logs()[before:]
    warnings = [line["event"] for line in outage if line.get("level") == "warning"]
    restored = [line for line in outage if line.get("event") == "broker connection restored"]
    assert warnings == ["broker connection lost; retrying"]
    assert len(restored) == 1 and restored[0]["level"] == "info"
    assert [line for line in outage if line.get("level") in ("error", "critical")] == []
    assert not any("exception" in line or "Traceback" in str(line) for line in outage)
    print(f"broker back -> message consumed: {delay:.2f} s")
    assert delay < RECONNECT_CAP_SECONDS
