"""Serving DICOMweb from a child process, so that serving never slows receiving.

In the listener's own process, four clients retrieving at full speed halved the C-STORE rate (the
serving threads and the receive path share one GIL). In a child process at a lower CPU priority
(``nice``) the C-STORE rate stayed above 0.8 of its rate without clients (benchmarks/README.md).
The child opens the journal (SQLite allows readers beside the writer) and reads the instance files;
it reports requests by status through shared memory, exported with the listener's metrics.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from listener.config import DicomwebSettings, LoggingSettings, StorageSettings
from listener.dicomweb.app import DicomWebApp
from listener.journal_factory import open_journal
from listener.logs import configure_logging, get_logger
from listener.metrics import Metrics
from listener.startup import end_with_parent

log = get_logger("listener.dicomweb")

SERVING_NICENESS = 10  # receiving (the modalities) goes first when both want the CPU
STATUSES = (200, 204, 400, 401, 404, 406, 500)  # anything else counts as "other"
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0


def read_tokens(path: str) -> frozenset[str]:
    """Bearer tokens, one per line; blank lines and ``#`` comments ignored."""
    if not path:
        return frozenset()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@dataclass(frozen=True)
class _ChildArguments:
    """What the serving process needs (picklable: it is started with ``spawn``)."""

    settings: DicomwebSettings
    logging: LoggingSettings
    storage: StorageSettings
    files_root: Path
    base_url: str
    parent_pid: int


class _RequestCounts(Collector):
    """``dicom_listener_dicomweb_requests_total{status}`` from the child's shared counters."""

    def __init__(self, counts: list[Synchronized[int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One sample per status."""
        family = CounterMetricFamily(
            "dicom_listener_dicomweb_requests",
            "DICOMweb requests by HTTP status.",
            labels=["status"],
        )
        for label, count in zip([*map(str, STATUSES), "other"], self._counts, strict=True):
            family.add_metric([label], count.value)
        yield family


class DicomWebServer:
    """uvicorn (HTTP/1.1, TLS when configured) serving :class:`DicomWebApp` in a child process."""

    def __init__(
        self,
        settings: DicomwebSettings,
        *,
        logging: LoggingSettings,
        storage: StorageSettings,
        files_root: Path,
        base_url: str,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        context = multiprocessing.get_context("spawn")
        self._counts = [context.Value("q", 0) for _ in range(len(STATUSES) + 1)]
        self._listening = context.Event()
        arguments = _ChildArguments(
            settings, logging, storage, files_root, base_url, parent_pid=os.getpid()
        )
        self._process = context.Process(
            target=_serve,
            args=(arguments, self._counts, self._listening),
            name="dicomweb",
            daemon=True,
        )
        metrics.registry.register(_RequestCounts(self._counts))

    def start(self) -> None:
        """Start the serving process; raise OSError if it does not listen in time."""
        self._process.start()
        if not self._listening.wait(_START_TIMEOUT_SECONDS) or not self._process.is_alive():
            self.stop()
            raise OSError(
                f"DICOMweb could not listen on {self._settings.host}:{self._settings.port}"
            )
        log.info("dicomweb listening", host=self._settings.host, port=self._settings.port)

    def stop(self) -> None:
        """SIGTERM (uvicorn finishes open responses briefly), then SIGKILL if it lingers."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(_STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _serve(arguments: _ChildArguments, counts: list[Synchronized[int]], listening: Any) -> None:
    """The child process: logging as the parent's, a journal of its own, uvicorn until SIGTERM."""
    end_with_parent(arguments.parent_pid)
    os.nice(SERVING_NICENESS)
    logging = arguments.logging
    configure_logging(
        level=logging.level, output_format=logging.format, include_phi=logging.include_phi
    )

    def count(status: int) -> None:
        index = STATUSES.index(status) if status in STATUSES else len(STATUSES)
        with counts[index].get_lock():
            counts[index].value += 1

    settings = arguments.settings
    journal = open_journal(arguments.storage)
    app = DicomWebApp(
        journal,
        arguments.files_root,
        base_url=arguments.base_url,
        tokens=read_tokens(settings.token_file),
        count=count,
    )
    config = uvicorn.Config(
        app.asgi,
        host=settings.host,
        port=settings.port,
        lifespan="off",
        log_config=None,  # our logging; uvicorn's own access log would print query strings
        access_log=False,
        ssl_certfile=settings.tls.cert_file or None,
        ssl_keyfile=settings.tls.key_file or None,
        timeout_keep_alive=30,
    )
    server = _SignallingServer(config, listening)
    try:
        server.run()
    finally:
        journal.close()


class _SignallingServer(uvicorn.Server):
    """uvicorn's server, setting an event once its socket listens."""

    def __init__(self, config: uvicorn.Config, listening: Any) -> None:
        super().__init__(config)
        self._listening = listening

    async def startup(self, sockets: Any = None) -> None:
        """Bind as uvicorn does, then tell the parent."""
        await super().startup(sockets)
        if self.started:
            self._listening.set()
