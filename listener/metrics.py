"""Prometheus metrics and the health endpoints, served together on ``metrics.host:metrics.port``.

``/metrics`` is the Prometheus text format; ``/healthz`` answers 200 while the process runs;
``/readyz`` answers 200 while a C-STORE would be acknowledged (see :mod:`listener.readiness`), and
503 with the reasons otherwise. Each service owns its registry (no process-global metrics), so
tests can run several. Counters carry no ``_created`` series: nothing here needs their creation
time, and each one doubled the series a scrape stores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from listener.logs import get_logger

log = get_logger("listener.metrics")

PREFIX = "dicom_listener_"
Readiness = Callable[[], list[str]]


class Metrics:
    """Every metric the listener exports (names are prefixed ``dicom_listener_``)."""

    def __init__(self) -> None:
        # Process-wide in prometheus_client (no per-registry switch); no registry here wants them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it untyped
        self.registry = CollectorRegistry()
        registry = self.registry
        self.associations_active = Gauge(
            f"{PREFIX}associations_active", "Associations open now.", registry=registry
        )
        self.associations = Counter(
            f"{PREFIX}associations",
            "Association requests by outcome (accepted, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.connections_refused = Counter(
            f"{PREFIX}connections_refused",
            "Connections closed before an association by reason (silent, not DICOM, TLS, ...).",
            ["reason"],
            registry=registry,
        )
        self.instances_received = Counter(
            f"{PREFIX}instances_received",
            "C-STORE requests by outcome (stored, duplicate, or the failure kind).",
            ["outcome"],
            registry=registry,
        )
        self.bytes_received = Counter(
            f"{PREFIX}received_bytes", "Bytes of instances stored.", registry=registry
        )
        self.studies_pending = Gauge(
            f"{PREFIX}studies_pending", "Studies received and not yet finished.", registry=registry
        )
        self.studies_published = Counter(
            f"{PREFIX}studies_published",
            "Study versions confirmed by the broker (first versions and republications).",
            registry=registry,
        )
        self.studies_republished = Counter(
            f"{PREFIX}studies_republished",
            "Study versions after the first (late instances, republish) confirmed by the broker.",
            registry=registry,
        )
        self.outbox_depth = Gauge(
            f"{PREFIX}outbox_depth",
            "Finished study versions waiting for the broker.",
            registry=registry,
        )
        self.broker_connected = Gauge(
            f"{PREFIX}broker_connected",
            "1 while the publisher's broker connection is open, else 0 (not part of /readyz).",
            registry=registry,
        )
        self.publish_failures = Counter(
            f"{PREFIX}publish_failures", "Failed attempts to publish or connect.", registry=registry
        )
        self.journal_commit_seconds = Histogram(
            f"{PREFIX}journal_commit_seconds",
            "Time to commit one received instance to the journal.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.publish_latency_seconds = Histogram(
            f"{PREFIX}publish_latency_seconds",
            "Time from a study being finished to the broker confirming its message.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600),
            registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsServer:
    """A small HTTP server in a background thread for /metrics, /healthz and /readyz."""

    def __init__(self, metrics: Metrics, readiness: Readiness, *, host: str, port: int) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Bind and serve."""
        handler = _handler(self._metrics, self._readiness)
        self._server = ThreadingHTTPServer(self._address, handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics listening", host=self._address[0], port=self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(metrics: Metrics, readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._answer(200, b"ok\n")
            elif self.path == "/readyz":
                problems = readiness()
                body = ("\n".join(problems) or "ready").encode() + b"\n"
                self._answer(503 if problems else 200, body)
            else:
                self._answer(404, b"not found\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood the log; stay quiet."""

    return Handler
