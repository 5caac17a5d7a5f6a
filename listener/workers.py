"""``dicom.workers > 1``: several processes serving one DICOM port, and their supervisor.

Each worker is a whole listener (:class:`~listener.service.ListenerService`) in a process of its
own, started with ``spawn``; they all accept from the one listening socket the supervisor binds
(:func:`listen`), the least busy first (``GuardedServer.get_request``), so one host uses all its
cores. They share the journal
(SQLite in ``storage.data_dir``, or PostgreSQL) and ``data_dir/instances``. What must not be shared:

- the spool: worker ``i`` spools into ``data_dir/spool-w<i>``, which only it clears at its start,
  so a restarted worker never deletes a live sibling's half-received files;
- the metrics port: worker ``i`` serves ``/metrics``, ``/healthz`` and ``/readyz`` on
  ``metrics.port + i``;
- DICOMweb: only worker 0 serves it.

The supervisor (the process started by ``run``) only starts, watches and stops workers. A worker
that dies is logged and started again after a backoff (doubling from 1 s up to 30 s; back to 1 s
once a worker has run 30 s), so a crash loop does not spin. A worker that fails at the very first
start (a port in use, an unwritable data directory) stops them all: ``run`` exits 1, as a single
listener would. SIGTERM or SIGINT reaches every worker as SIGTERM: each stops accepting, lets open
associations finish, and exits; then the supervisor exits 0. Workers get SIGTERM if the
supervisor dies, even by SIGKILL (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from listener import __version__
from listener.config import Settings
from listener.logs import get_logger
from listener.startup import STARTUP_ERRORS, restrict_permissions, startup_problem

log = get_logger("listener.workers")

BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 1.0, 30.0
DRAIN_SECONDS = 60.0  # a worker still running this long after SIGTERM is killed
_SPOOL = re.compile(r"spool-w(\d+)")


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process is given (picklable: it is started with ``spawn``)."""

    index: int
    settings: Settings
    spool_dir: Path
    parent_pid: int
    ready: Connection  # the worker sends one message once it accepts associations
    listening: socket.socket  # the supervisor's listening socket: one accept queue for all


WorkerTarget = Callable[[WorkerJob], None]


def supervise(settings: Settings, stop: threading.Event, target: WorkerTarget) -> int:
    """``run`` with ``dicom.workers > 1``: check the port is free, then run and watch the workers.

    Returns the exit status (1: the port is taken or a worker could not start; else 0).
    """
    data_dir = settings.storage.data_dir
    dicom = settings.dicom
    try:
        # Fails while another listener holds the port: then its spools are left be.
        listening = listen(dicom.host, dicom.port, backlog=dicom.listen_backlog)
        restrict_permissions(data_dir)
        remove_unused_spools(data_dir, dicom.workers)
    except STARTUP_ERRORS as exc:
        print(f"dicom-listener: {startup_problem(exc, data_dir)}", file=sys.stderr)
        return 1
    wake_read, wake_write = os.pipe()  # a signal makes it readable: the supervisor wakes at once
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    log.info("supervising workers", version=__version__, workers=dicom.workers, port=dicom.port)
    with listening:
        return Supervisor(settings, target, listening).run(stop, wake_fd=wake_read)


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own metrics port; DICOMweb in worker 0 only."""
    return replace(
        settings,
        metrics=replace(settings.metrics, port=settings.metrics.port + index),
        dicomweb=replace(settings.dicomweb, enabled=settings.dicomweb.enabled and index == 0),
    )


def worker_spool(data_dir: Path, index: int) -> Path:
    """The spool directory of worker ``index`` (cleared by that worker alone)."""
    return data_dir / f"spool-w{index}"


def listen(host: str, port: int, *, backlog: int) -> socket.socket:
    """The DICOM port's listening socket, which every worker accepts from (raises OSError).

    One accept queue shared by the workers: whichever is free takes the next connection (with
    SO_REUSEPORT the kernel would pick a worker by a hash of the connection's addresses, however
    busy it is), and a connection waiting while a worker restarts is kept, not cut.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def remove_unused_spools(data_dir: Path, workers: int) -> None:
    """Delete spool directories of workers beyond ``workers`` (left by a larger setting)."""
    for path in data_dir.glob("spool-w*"):
        match = _SPOOL.fullmatch(path.name)
        if match and int(match.group(1)) >= workers and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class _Slot:
    """One worker position: its current process, its readiness and its restart schedule."""

    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    started_at: float = 0.0
    served: bool = False  # any of its processes ever became ready
    backoff: float = BACKOFF_FIRST_SECONDS
    start_at: float = 0.0  # when a dead worker is started again


class Supervisor:
    """Starts ``dicom.workers`` processes running ``target``, restarts the dead, drains all."""

    def __init__(self, settings: Settings, target: WorkerTarget, listening: socket.socket) -> None:
        self._listening = listening
        self._settings = settings
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(index) for index in range(settings.dicom.workers)]
        self._all_served = False

    def run(self, stop: threading.Event, *, wake_fd: int | None = None) -> int:
        """Supervise until ``stop`` is set (``wake_fd`` becomes readable then); return 0 or 1.

        1 when a worker fails at its first start (it printed why); else 0 once all have drained.
        """
        for slot in self._slots:
            self._start(slot)
        failed = False
        while not stop.is_set() and not failed:
            waitables: list[object] = [wake_fd] if wake_fd is not None else []
            for slot in self._slots:
                if slot.process is not None:
                    waitables.append(slot.process.sentinel)
                if slot.ready is not None:
                    waitables.append(slot.ready)
            wait(waitables, timeout=self._next_timeout())  # type: ignore[arg-type]
            failed = self._check_slots(stopping=stop.is_set())
        self._drain()
        return 1 if failed else 0

    def _next_timeout(self) -> float:
        """Until the next scheduled restart (at most 1 s)."""
        now = time.monotonic()
        waits = [slot.start_at - now for slot in self._slots if slot.process is None]
        return max(0.0, min([1.0, *waits]))

    def _check_slots(self, *, stopping: bool) -> bool:
        """Note readiness, deaths and due restarts; True when a worker failed at its first start."""
        for slot in self._slots:
            self._note_ready(slot)
            process = slot.process
            if process is not None and not process.is_alive():
                if not slot.served:
                    log.error(
                        "worker failed to start", worker=slot.index, exitcode=process.exitcode
                    )
                    return True
                self._schedule_restart(slot, process)
            if slot.process is None and not stopping and time.monotonic() >= slot.start_at:
                self._start(slot)
        return False

    def _note_ready(self, slot: _Slot) -> None:
        ready = slot.ready
        if ready is None or not ready.poll():
            return
        with contextlib.suppress(EOFError, OSError):  # EOF: it died first
            ready.recv()
            slot.served = True
            log.info("worker ready", worker=slot.index, pid=getattr(slot.process, "pid", None))
            if not self._all_served and all(other.served for other in self._slots):
                self._all_served = True
                log.info("workers ready", workers=len(self._slots))
        ready.close()
        slot.ready = None

    def _schedule_restart(self, slot: _Slot, process: BaseProcess) -> None:
        now = time.monotonic()
        if now - slot.started_at >= BACKOFF_MAX_SECONDS:
            slot.backoff = BACKOFF_FIRST_SECONDS  # it had been running well: not a crash loop
        log.error(
            "worker died; restarting",
            worker=slot.index,
            pid=process.pid,
            exit=_exit_description(process.exitcode),
            restart_in_s=slot.backoff,
        )
        process.close()
        if slot.ready is not None:
            slot.ready.close()
        slot.process, slot.ready = None, None
        slot.start_at = now + slot.backoff
        slot.backoff = min(slot.backoff * 2, BACKOFF_MAX_SECONDS)

    def _start(self, slot: _Slot) -> None:
        receiver, sender = self._context.Pipe(duplex=False)
        settings = self._settings
        job = WorkerJob(
            index=slot.index,
            settings=worker_settings(settings, slot.index),
            spool_dir=worker_spool(settings.storage.data_dir, slot.index),
            parent_pid=os.getpid(),
            ready=sender,
            listening=self._listening,
        )
        process = self._context.Process(
            target=self._target, args=(job,), name=f"dicom-worker-{slot.index}"
        )
        process.start()
        sender.close()  # the worker holds the sending end; EOF here if it dies
        slot.process, slot.ready, slot.started_at = process, receiver, time.monotonic()
        log.info("worker started", worker=slot.index, pid=process.pid)

    def _drain(self) -> None:
        """SIGTERM every worker, wait for them to finish their associations; kill stragglers."""
        running = [slot.process for slot in self._slots if slot.process is not None]
        for process in running:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + DRAIN_SECONDS
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop in time; killing it", pid=process.pid)
                process.kill()
                process.join()
        log.info("workers stopped", workers=len(running))


def _exit_description(exitcode: int | None) -> str:
    """``"status 3"`` or ``"signal SIGKILL"``."""
    if exitcode is None or exitcode >= 0:
        return f"status {exitcode}"
    with contextlib.suppress(ValueError):
        return f"signal {signal.Signals(-exitcode).name}"
    return f"signal {-exitcode}"
