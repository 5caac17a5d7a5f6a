"""Tests start listeners on ports probed free; one taken meanwhile must not fail the test."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import AmqpTopology, ListenerProcess


def _env(amqp: AmqpTopology) -> dict[str, str]:
    return {**amqp.env(), "LISTENER_METRICS__ENABLED": "false"}


def test_a_chosen_port_taken_before_the_listener_binds_it_is_replaced(
    tmp_path: Path, amqp: AmqpTopology
) -> None:
    """free_port() races: a start that fails with EADDRINUSE retries on a fresh port."""
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        listener = ListenerProcess(data_dir=tmp_path / "data", env=_env(amqp), port=taken)
        try:
            listener.start()
            assert listener.port != taken
            assert listener.alive
        finally:
            listener.kill()


def test_a_port_the_test_asked_for_is_not_replaced(tmp_path: Path, amqp: AmqpTopology) -> None:
    """A test that names its port (a restart on the same port) fails instead of moving."""
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        listener = ListenerProcess(
            data_dir=tmp_path / "data", env=_env(amqp), port=taken, chosen_ports=False
        )
        try:
            with pytest.raises(AssertionError, match="exited early"):
                listener.start()
        finally:
            listener.kill()
