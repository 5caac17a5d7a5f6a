"""A listener process whose journal is in PostgreSQL: it stores, publishes and fails safely."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.conftest import ListenerFactory
from tests.support import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    PYDICOM_TEST_FILES,
    AmqpTopology,
    ListenerProcess,
    TcpProxy,
    free_port,
    http_get,
    postgres_url,
    storescu,
    wait_for,
)

CT = PYDICOM_TEST_FILES / "CT_small.dcm"
MR = PYDICOM_TEST_FILES / "MR_small.dcm"


def test_a_study_stored_with_storescu_is_journaled_in_postgresql_and_published(
    start_listener: ListenerFactory, amqp: AmqpTopology, postgres: str, tmp_path: Path
) -> None:
    """With storage.database_url the record lands in PostgreSQL (no SQLite file) and publishes.

    The DICOMweb process and ``dicom-listener studies`` read it from there too.
    """
    web_port = free_port()
    listener = start_listener(
        LISTENER_STORAGE__DATABASE_URL=postgres,
        LISTENER_DICOMWEB__ENABLED="true",
        LISTENER_DICOMWEB__PORT=str(web_port),
    )

    run = storescu(listener.port, [CT])

    assert run.succeeded == [CT], run.output
    [message] = amqp.drain(1, timeout=30)
    assert message.resource["numberOfInstances"] == 1
    with psycopg.connect(postgres) as db:
        [(count,)] = db.execute("SELECT count(*) FROM instances").fetchall()
        [(state,)] = db.execute("SELECT state FROM studies").fetchall()
    assert (count, state) == (1, "published")
    assert not (tmp_path / "data" / "journal.sqlite3").exists()
    study_uid = message.resource["id"]
    studies = listener.cli("studies")
    assert studies.returncode == 0 and study_uid in studies.stdout, studies.stderr
    status, body = http_get(f"http://127.0.0.1:{web_port}/dicomweb/studies")
    assert status == 200 and study_uid in body


def test_with_the_database_unreachable_stores_fail_and_readyz_is_503(
    start_listener: ListenerFactory, postgres: str
) -> None:
    """PostgreSQL cut off: C-STORE gets a failure status (never 0x0000), /readyz 503; then heals."""
    proxy = TcpProxy(POSTGRES_HOST, POSTGRES_PORT)
    try:
        url = postgres.replace(f":{POSTGRES_PORT}/", f":{proxy.port}/")
        listener = start_listener(LISTENER_STORAGE__DATABASE_URL=url)
        readyz = f"{listener.metrics_url}/readyz"
        assert http_get(readyz) == (200, "ready\n")

        proxy.cut()
        run = storescu(listener.port, [CT])
        status, body = http_get(readyz)

        assert run.succeeded == [], run.output
        # DCMTK names 0xA700 "Out of Resources" and prints 0x0110 as an unknown status.
        assert "Status: 0x110)" in run.output or "Out of Resources" in run.output, run.output
        assert status == 503 and "journal database not writable" in body
        assert http_get(f"{listener.metrics_url}/metrics")[0] == 200  # outbox depth unknown
        with psycopg.connect(postgres) as db:
            assert db.execute("SELECT count(*) FROM instances").fetchone() == (0,)

        proxy.restore()
        wait_for(lambda: http_get(readyz)[0] == 200, timeout=15, what="/readyz to recover")
        assert storescu(listener.port, [MR]).succeeded == [MR]
    finally:
        proxy.close()


def test_a_database_that_does_not_answer_at_start_stops_the_listener_with_one_line(
    tmp_path: Path, amqp: AmqpTopology
) -> None:
    """No PostgreSQL at the URL at start: run prints one line naming it and exits 1."""
    url = postgres_url("postgres", port=free_port())
    listener = ListenerProcess(
        data_dir=tmp_path / "data", env={**amqp.env(), "LISTENER_STORAGE__DATABASE_URL": url}
    ).start(wait=False)

    assert listener.process is not None
    assert listener.process.wait(timeout=30) == 1
    output = listener.log_path.read_text()
    assert "cannot start: journal database" in output and "Traceback" not in output
