"""The pieces of ``dicom.workers`` that need no running listener: settings, spools, the port."""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import pytest
from pynetdicom import AE

from listener.config import load_settings
from listener.config import report as config_report
from listener.scp.guard import GuardedServer
from listener.workers import (
    Supervisor,
    WorkerJob,
    listen,
    remove_unused_spools,
    worker_settings,
    worker_spool,
)
from tests.support import free_port


def test_worker_settings_offset_the_metrics_port_and_keep_dicomweb_in_worker_0() -> None:
    """Worker i serves metrics on metrics.port + i; only worker 0 serves DICOMweb."""
    settings = load_settings(
        None,
        {
            "LISTENER_DICOM__WORKERS": "3",
            "LISTENER_METRICS__PORT": "9000",
            "LISTENER_DICOMWEB__ENABLED": "true",
        },
    ).settings

    workers = [worker_settings(settings, index) for index in range(3)]

    assert [w.metrics.port for w in workers] == [9000, 9001, 9002]
    assert [w.dicomweb.enabled for w in workers] == [True, False, False]
    assert all(w.dicom == settings.dicom for w in workers)


def test_check_config_shows_the_number_of_workers() -> None:
    """check-config lists dicom.workers with its value and source."""
    loaded = load_settings(None, {"LISTENER_DICOM__WORKERS": "4"})

    lines = config_report.settings_lines(loaded.settings, loaded.sources)

    assert "dicom.workers = 4  # env" in lines


def test_spools_of_workers_beyond_the_setting_are_removed(tmp_path: Path) -> None:
    """Start-up removes spool-w<i> of workers that no longer exist, keeps the others'."""
    for index in range(4):
        spool = worker_spool(tmp_path, index)
        spool.mkdir()
        (spool / "leftover").write_bytes(b"x")
    (tmp_path / "spool-wx").mkdir()

    remove_unused_spools(tmp_path, 2)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool-w0", "spool-w1", "spool-wx"]


def _sibling(listening: socket.socket) -> GuardedServer:
    """A worker's server on the supervisor's listening socket, accepting in its own thread."""
    ae = AE()
    ae.add_supported_context("1.2.840.10008.1.1")  # Verification
    server = ae.make_server(
        listening.getsockname(), server_class=GuardedServer, listening=listening
    )
    assert isinstance(server, GuardedServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _echo(port: int) -> bool:
    ae = AE()
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", port)
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return bool(status) and status.Status == 0x0000


def test_sibling_servers_accept_from_one_socket_that_nobody_else_can_bind() -> None:
    """Workers share the supervisor's socket (one accept queue); the port is taken for others."""
    listening = listen("127.0.0.1", free_port(), backlog=8)
    port = listening.getsockname()[1]
    servers = [_sibling(listening), _sibling(listening)]
    try:
        answered = [_echo(port) for _ in range(6)]
        with pytest.raises(OSError) as taken:
            listen("127.0.0.1", port, backlog=8)
    finally:
        for server in servers:
            server.shutdown()
        listening.close()

    assert all(answered)
    assert taken.value.errno == errno.EADDRINUSE


def fail_at_start(job: WorkerJob) -> None:
    """A worker that exits 1 before it is ready (runs in a spawned process)."""
    raise SystemExit(1)


def test_a_worker_failing_at_its_first_start_stops_the_supervisor_with_1(tmp_path: Path) -> None:
    """A worker that never became ready is not restarted: run() returns 1 at once."""
    settings = load_settings(
        None,
        {"LISTENER_DICOM__WORKERS": "2", "LISTENER_STORAGE__DATA_DIR": str(tmp_path)},
    ).settings

    results: list[int] = []
    listening = listen("127.0.0.1", free_port(), backlog=8)
    supervisor = Supervisor(settings, fail_at_start, listening)
    supervising = threading.Thread(
        target=lambda: results.append(supervisor.run(threading.Event())), daemon=True
    )
    supervising.start()
    supervising.join(timeout=60)
    listening.close()

    assert results == [1]
