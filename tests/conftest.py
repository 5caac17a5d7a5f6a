"""Fixtures for real peers: a unique RabbitMQ topology per test and listener processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import AmqpTopology, ListenerProcess, require_broker


@pytest.fixture
def amqp() -> Iterator[AmqpTopology]:
    """A unique exchange and queue on the real broker, removed after the test."""
    require_broker()
    topology = AmqpTopology()
    yield topology
    topology.delete()


ListenerFactory = Callable[..., ListenerProcess]


@pytest.fixture
def start_listener(tmp_path: Path, amqp: AmqpTopology) -> Iterator[ListenerFactory]:
    """Start ``python -m listener`` processes wired to this test's topology; stopped afterwards."""
    started: list[ListenerProcess] = []

    def start(
        *,
        quiet_period: float = 0.5,
        data_dir: Path | None = None,
        port: int | None = None,
        wait: bool = True,
        **env: str,
    ) -> ListenerProcess:
        settings = {
            **amqp.env(),
            "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": str(quiet_period),
            **env,
        }
        listener = ListenerProcess(data_dir=data_dir or tmp_path / "data", env=settings)
        if port is not None:
            listener.port = port
        started.append(listener)
        return listener.start(wait=wait)

    yield start
    for listener in started:
        listener.kill()
