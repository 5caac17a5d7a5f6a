"""The pieces of ``dicom.workers`` that need no running listener: settings, spools, the port."""

from __future__ import annotations

import errno
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
    port_in_use,
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


def _bind(port: int, *, reuse_port: bool) -> GuardedServer:
    ae = AE()
    ae.add_supported_context("1.2.840.10008.1.1")  # Verification
    server = ae.make_server(("127.0.0.1", port), server_class=GuardedServer, reuse_port=reuse_port)
    assert isinstance(server, GuardedServer)
    return server


def test_reuse_port_lets_sibling_servers_share_the_port_and_nobody_else() -> None:
    """With reuse_port two servers bind one port; to a plain bind (and the probe) it is taken."""
    port = free_port()
    first = _bind(port, reuse_port=True)
    try:
        second = _bind(port, reuse_port=True)
        second.server_close()
        with pytest.raises(OSError) as plain:
            _bind(port, reuse_port=False)
        probe = port_in_use("127.0.0.1", port)
    finally:
        first.server_close()

    assert plain.value.errno == errno.EADDRINUSE
    assert probe is not None and probe.errno == errno.EADDRINUSE
    assert port_in_use("127.0.0.1", port) is None


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
    supervising = threading.Thread(
        target=lambda: results.append(Supervisor(settings, fail_at_start).run(threading.Event())),
        daemon=True,
    )
    supervising.start()
    supervising.join(timeout=60)

    assert results == [1]
