"""Fixtures for real peers: a unique RabbitMQ topology per test and listener processes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from listener.journal import Journal
from listener.journal_api import JournalStore
from listener.journal_pg import PgJournal
from listener.logs import configure_logging
from tests.cluster import NODE_NAMES, Nodes
from tests.postgres_server import PrivatePostgres
from tests.support import (
    AmqpTopology,
    ListenerProcess,
    free_port,
    postgres_database,
    postgres_url,
    require_broker,
)


@pytest.fixture
def amqp() -> Iterator[AmqpTopology]:
    """A unique exchange and queue on the real broker, removed after the test."""
    require_broker()
    topology = AmqpTopology()
    yield topology
    topology.delete()


@pytest.fixture
def postgres() -> Iterator[str]:
    """The URL of a fresh database on the real PostgreSQL, dropped after the test."""
    with postgres_database() as name:
        yield postgres_url(name)


JournalOpener = Callable[[], JournalStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalOpener]:
    """Opens this test's journal (again): SQLite in tmp_path, or PostgreSQL in a fresh database.

    The journal contract tests take this fixture, so each behaviour is checked on both stores.
    """
    opened: list[JournalStore] = []
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path / "j.sqlite3"

            def create() -> JournalStore:
                return Journal(path)
        else:
            url = postgres_url(stack.enter_context(postgres_database()))

            def create() -> JournalStore:
                return PgJournal(url)

        def opener() -> JournalStore:
            opened.append(create())
            return opened[-1]

        yield opener
        for journal in opened:
            journal.close()


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Route the listener's logs (JSON, DEBUG and up) into memory; returns a reader of the lines."""
    stream = io.StringIO()
    configure_logging(level="DEBUG", output_format="json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


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
            "LISTENER_STORAGE__MIN_FREE_MB": "64",
            "LISTENER_METRICS__HOST": "127.0.0.1",
            "LISTENER_METRICS__PORT": str(free_port()),
            **env,
        }
        listener = ListenerProcess(data_dir=data_dir or tmp_path / "data", env=settings)
        if port is not None:
            listener.port, listener.chosen_ports = port, False
        started.append(listener)
        return listener.start(wait=wait)

    yield start
    for listener in started:
        listener.kill()


ClusterFactory = Callable[..., Nodes]


@pytest.fixture
def start_cluster(postgres: str, start_listener: ListenerFactory, tmp_path: Path) -> ClusterFactory:
    """Start listener nodes (node-a, node-b, ...) on one PostgreSQL journal and one queue.

    Each node has its own data_dir (``tmp_path/<node name>``), DICOM port, metrics port and
    ``storage.node_name``; all share ``database_url`` (this test's database unless given) and this
    test's exchange and queue. Stopped after the test, before the database is dropped.
    """

    def start(
        count: int = 3, *, database_url: str = "", quiet_period: float = 2.0, **env: str
    ) -> Nodes:
        return {
            name: start_listener(
                quiet_period=quiet_period,
                data_dir=tmp_path / name,
                LISTENER_STORAGE__DATABASE_URL=database_url or postgres,
                LISTENER_STORAGE__NODE_NAME=name,
                **env,
            )
            for name in NODE_NAMES[:count]
        }

    return start


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL server of this test's own, which it may stop and start; removed after.

    For tests that take the database away: the machine's shared server is never stopped.
    """
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
