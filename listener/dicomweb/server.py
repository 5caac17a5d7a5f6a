"""Serving the DICOMweb application with uvicorn in a background thread of the listener."""

from __future__ import annotations

import threading
from pathlib import Path

import uvicorn

from listener.config import DicomwebSettings
from listener.dicomweb.app import DicomWebApp
from listener.journal_api import JournalStore
from listener.logging import get_logger
from listener.metrics import Metrics

log = get_logger("listener.dicomweb")


def read_tokens(path: str) -> frozenset[str]:
    """Bearer tokens, one per line; blank lines and ``#`` comments ignored."""
    if not path:
        return frozenset()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


class DicomWebServer:
    """uvicorn (HTTP/1.1, TLS when configured) serving :class:`DicomWebApp` until stopped."""

    def __init__(
        self,
        settings: DicomwebSettings,
        *,
        journal: JournalStore,
        files_root: Path,
        base_url: str,
        metrics: Metrics,
    ) -> None:
        app = DicomWebApp(
            journal,
            files_root,
            base_url=base_url,
            tokens=read_tokens(settings.token_file),
            metrics=metrics,
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
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="dicomweb", daemon=True)
        self._settings = settings

    def start(self, *, timeout: float = 10.0) -> None:
        """Start serving; raise OSError if the port could not be bound in time."""
        self._thread.start()
        self._thread.join(timeout=0)
        started = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self._server.started or not self._thread.is_alive():
                break
            started.wait(0.05)
        if not self._server.started:
            raise OSError(
                f"DICOMweb could not listen on {self._settings.host}:{self._settings.port}"
            )
        log.info("dicomweb listening", host=self._settings.host, port=self._settings.port)

    def stop(self) -> None:
        """Finish open responses briefly, then stop."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
