"""``dicom.workers``: processes sharing one DICOM port, supervised, drained, sharing a journal."""

from __future__ import annotations

import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE

# pynetdicom creates its SOP class names at import time, so mypy cannot see them.
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import ListenerFactory
from tests.integration.test_dicomweb import dicomweb_env
from tests.modality import make_study
from tests.support import (
    AmqpTopology,
    ListenerProcess,
    StoreRun,
    free_port,
    http_get,
    open_ct_association,
    published_index,
    storescu,
    wait_for,
)

_START_ATTEMPTS = 3


def start_workers(start_listener: ListenerFactory, workers: int, **options: Any) -> ListenerProcess:
    """A listener with ``workers`` processes, returned once every one of them accepts.

    Each worker imports the whole listener in a fresh interpreter: on a loaded two-core machine
    four of them take longer than the single listener's 20 s start deadline. Worker ``i`` serves
    metrics on the chosen port + ``i``, which nobody checked was free: a start that failed on a
    taken port is retried on fresh ones.
    """
    listener = start_listener(LISTENER_DICOM__WORKERS=str(workers), wait=False, **options)
    for attempt in range(_START_ATTEMPTS):
        try:
            wait_for(lambda: _ready(listener), timeout=90, what="every worker to be ready")
            return listener
        except AssertionError:
            if not listener.may_retry() or attempt == _START_ATTEMPTS - 1:
                raise
        listener.choose_fresh_ports()
        listener.start(wait=False)
    raise AssertionError("unreachable")


def _ready(listener: ListenerProcess) -> bool:
    if not listener.alive:
        raise AssertionError(f"listener exited early:\n{listener.log_path.read_text()}")
    return any(listener.events("workers ready"))


def worker_pids(listener: ListenerProcess) -> dict[int, int]:
    """Worker index -> pid of its newest process, from the supervisor's log."""
    return {line["worker"]: line["pid"] for line in listener.events("worker ready")}


def echo(port: int) -> bool:
    """One C-ECHO association; True when it succeeded."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return bool(status) and status.Status == 0x0000


def served_by(listener: ListenerProcess) -> set[int]:
    """Indexes of the workers that have ended at least one association."""
    return {line["worker"] for line in listener.events("association ended")}


def test_workers_share_the_port_and_a_killed_worker_is_replaced(
    start_listener: ListenerFactory,
) -> None:
    """Two workers answer on one port; kill -9 of one: restarted, port answers; SIGTERM exits 0."""
    listener = start_workers(start_listener, 2)
    metrics_port = int(listener.env["LISTENER_METRICS__PORT"])
    pids = worker_pids(listener)

    wait_for(
        lambda: echo(listener.port) and served_by(listener) == {0, 1},
        timeout=30,
        what="associations to reach both workers",
    )
    os.kill(pids[0], signal.SIGKILL)
    wait_for(
        lambda: any(listener.events("worker died; restarting")),
        timeout=10,
        what="the supervisor to see worker 0 die (all its threads gone, its socket closed)",
    )
    answered = [echo(listener.port) for _ in range(5)]  # worker 1 alone meanwhile
    wait_for(
        lambda: worker_pids(listener)[0] != pids[0], timeout=30, what="worker 0 to be restarted"
    )
    deaths = list(listener.events("worker died; restarting"))
    health = [http_get(f"http://127.0.0.1:{metrics_port + i}/healthz")[0] for i in (0, 1)]
    exit_code = listener.stop()

    assert all(answered)
    assert [(d["worker"], d["pid"], d["exit"]) for d in deaths] == [(0, pids[0], "signal SIGKILL")]
    assert health == [200, 200]
    assert exit_code == 0
    assert not [pid for pid in worker_pids(listener).values() if _running(pid)]


def test_sigterm_drains_every_worker_letting_open_associations_finish(
    start_listener: ListenerFactory,
) -> None:
    """On SIGTERM to the supervisor, an open association completes its store; exit code is 0."""
    listener = start_workers(start_listener, 2, LISTENER_METRICS__ENABLED="false")
    association, dataset = open_ct_association(listener.port)
    assert listener.process is not None

    listener.process.send_signal(signal.SIGTERM)
    wait_for(
        lambda: len(list(listener.events("shutting down"))) == 2,
        timeout=10,
        what="both workers to begin shutting down",
    )
    status = association.send_c_store(dataset)
    association.release()

    assert status.Status == 0x0000
    assert listener.process.wait(timeout=60) == 0
    assert len(list(listener.events("stopped"))) == 2
    assert not echo(listener.port)


def test_restarted_worker_clears_its_own_spool_not_a_siblings(
    start_listener: ListenerFactory,
) -> None:
    """A restarted worker removes its own spool leftovers and leaves a live sibling's files."""
    listener = start_workers(start_listener, 2, LISTENER_METRICS__ENABLED="false")
    data_dir = listener.data_dir
    leftover = data_dir / "spool-w0" / "tmp-crashed"
    in_flight = data_dir / "spool-w1" / "tmp-receiving"
    for path in (leftover, in_flight):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a dataset")
    pids = worker_pids(listener)

    os.kill(pids[0], signal.SIGKILL)
    wait_for(
        lambda: worker_pids(listener)[0] != pids[0], timeout=30, what="worker 0 to be restarted"
    )

    assert not leftover.exists()
    assert in_flight.exists()
    assert not (data_dir / "spool").exists()


def test_workers_end_when_the_supervisor_is_killed(start_listener: ListenerFactory) -> None:
    """SIGKILL to the supervisor: its workers stop too, so no orphan keeps the port."""
    listener = start_workers(start_listener, 2, LISTENER_METRICS__ENABLED="false")
    pids = worker_pids(listener).values()

    listener.kill()

    wait_for(lambda: not any(_running(pid) for pid in pids), timeout=30, what="the workers to end")
    assert not echo(listener.port)


def test_a_second_listener_with_workers_cannot_share_a_busy_port(
    start_listener: ListenerFactory,
) -> None:
    """SO_REUSEPORT is for siblings only: another ``run`` on the port exits 1 with one line."""
    first = start_workers(start_listener, 2, LISTENER_METRICS__ENABLED="false")

    second = first.cli("run")

    assert second.returncode == 1
    assert "cannot start" in second.stderr and "Address already in use" in second.stderr
    assert echo(first.port)


def test_only_worker_0_serves_dicomweb(start_listener: ListenerFactory, tmp_path: Path) -> None:
    """With DICOMweb on, every worker starts and one process (worker 0's) serves DICOMweb."""
    port = free_port()
    env = dicomweb_env(tmp_path, port)
    listener = start_workers(start_listener, 2, LISTENER_METRICS__ENABLED="false", **env)

    status, _ = http_get(f"http://127.0.0.1:{port}/dicomweb/studies")

    assert status == 401  # served, and no token sent
    assert [line["worker"] for line in listener.events("dicomweb listening")] == [0]


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the shared journal: SQLite in data_dir, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"LISTENER_STORAGE__DATABASE_URL": request.getfixturevalue("postgres")}


def test_study_split_over_four_parallel_associations_is_published_once(
    start_listener: ListenerFactory,
    amqp: AmqpTopology,
    journal_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Four workers, one study over four parallel associations: one ImagingStudy, every instance."""
    listener = start_workers(
        start_listener, 4, quiet_period=5, LISTENER_METRICS__ENABLED="false", **journal_env
    )
    study = make_study(16, series=2)
    files = []
    for index, dataset in enumerate(study):
        path = tmp_path / f"instance-{index}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    parts = [files[i::4] for i in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs: list[StoreRun] = list(pool.map(lambda part: storescu(listener.port, part), parts))
    messages = amqp.drain(1, timeout=60)
    messages += amqp.drain_until_quiet(quiet=8, timeout=60)  # any other worker's version

    assert [len(run.succeeded) for run in runs] == [4, 4, 4, 4], [r.output for r in runs]
    assert len(messages) == 1
    sent = {str(dataset.SOPInstanceUID) for dataset in study}
    published = set().union(*published_index(messages[0].resource).values())
    assert published == sent


def test_a_worker_port_taken_before_the_start_is_replaced(
    start_listener: ListenerFactory,
) -> None:
    """Worker 1's metrics port (the chosen one + 1) taken: the start is retried on fresh ports."""
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        listener = start_workers(start_listener, 2, LISTENER_METRICS__PORT=str(taken - 1))

        assert int(listener.env["LISTENER_METRICS__PORT"]) != taken - 1
        assert echo(listener.port)


def test_associations_opened_together_are_shared_out_evenly(
    start_listener: ListenerFactory,
) -> None:
    """Two workers, four associations opened at once, 20 times: two per worker nearly always.

    Every worker wakes for each new connection; one already serving associations waits a moment
    before accepting, so an idle sibling takes it. Without that, about 4 rounds in 10 split 3 to 1
    (measured; 16 of 20 even rounds would then come by chance about once in 20 runs). With it, a
    round can still split 3 to 1 when the idle worker is not scheduled within the wait (it
    happened once in 5 rounds on a loaded CI machine at 5 ms), so the test asks for 16 of 20.
    """
    listener = start_workers(start_listener, 2)
    splits = []
    for rounds in range(1, 21):
        with ThreadPoolExecutor(max_workers=4) as pool:
            opened = list(pool.map(lambda _: open_ct_association(listener.port), range(4)))
        for association, _dataset in opened:
            association.release()
        wait_for(
            partial(_ended_at_least, listener, 4 * rounds),
            timeout=10,
            what="the four associations to end",
        )
        workers = [line["worker"] for line in listener.events("association ended")][-4:]
        splits.append(sorted(workers))

    assert splits.count([0, 0, 1, 1]) >= 16, splits


def _ended_at_least(listener: ListenerProcess, count: int) -> bool:
    return len(list(listener.events("association ended"))) >= count


def _running(pid: int) -> bool:
    """True while any thread of ``pid`` is alive (a killed process's leader is a zombie first)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(") ", 1)[1][0] != "Z":
                    return True
        except FileNotFoundError:
            continue
    return False
