"""structlog setup: JSON lines off a terminal, readable console output on one; the PHI policy.

Standard-library records (pynetdicom, pika) go through the same renderer, so one process writes one
format. pynetdicom's complaints about what a peer sent (:class:`PeerNoiseFilter`) become single
WARNING lines without traceback, at most a few a minute per peer address, so a hostile peer cannot
fill the disk with them.

Patient data never reaches INFO or WARNING: :class:`PhiFilter` strips the keys that could carry
it from every event, whatever the caller passed; ``logging.include_phi`` lets them through on
DEBUG lines only, for troubleshooting.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from listener.ratelimit import PerKeyLimit

# Event keys that may carry patient data; removed from every event but allowed DEBUG ones.
PHI_KEYS = frozenset(
    {"patient_name", "patient_id", "patient_birth_date", "patient_sex", "accession_number"}
)


class PhiFilter:
    """Removes keys that could carry patient data, except from DEBUG lines when allowed."""

    def __init__(self, *, include_phi_at_debug: bool) -> None:
        self._allow_debug = include_phi_at_debug

    def __call__(
        self, _logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Drop the PHI keys of one event (a structlog processor)."""
        if self._allow_debug and method == "debug":
            return event
        for key in PHI_KEYS & event.keys():
            del event[key]
        return event


class PeerNoiseFilter(logging.Filter):
    """pynetdicom's lines about peers: one WARNING line each, no traceback, rate-limited per peer.

    pynetdicom logs an ERROR and then the exception with its full traceback for every PDU it
    refuses. What a peer sent is not our error: the traceback goes, the exception's message stays
    on the line, the level becomes WARNING, and each peer address gets ``limit`` lines per
    ``window`` seconds, then one summary line with the number left out. Lines from handler
    failures (``pynetdicom.events``: our own code) keep their level and traceback.
    """

    def __init__(
        self, *, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._limit = PerKeyLimit(limit=limit, window=window, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """Reshape or drop one record (True keeps it)."""
        if not record.name.startswith("pynetdicom") or record.name == "pynetdicom.events":
            return True
        self._summarise()
        if record.exc_info or record.levelno > logging.WARNING:
            record.msg, record.args = record.getMessage(), None
            record.exc_info = record.exc_text = record.stack_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if record.levelno < logging.WARNING:
            return True
        return self._limit.admit(_current_peer())

    def _summarise(self) -> None:
        for peer, count in self._limit.expired():
            logging.getLogger("listener.logs").warning(
                "pynetdicom lines not logged: %d from %s in %.0f s",
                count,
                peer,
                self._limit.window,
            )


class _ProcessFields:
    """Adds the same fields to every event of this process (threads included)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = dict(fields)

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """The event with the fields it does not set itself."""
        for key, value in self._fields.items():
            event.setdefault(key, value)
        return event


def _current_peer() -> str:
    """The peer address of the association whose thread is logging, or "unknown"."""
    thread: Any = threading.current_thread()
    association = getattr(thread, "assoc", thread)  # pynetdicom's DUL thread, or the association
    try:
        return str(association.requestor.address)
    except Exception:  # noqa: BLE001 - any other thread, or an association without a peer yet
        return "unknown"


def configure_logging(
    *,
    level: str = "INFO",
    output_format: str = "auto",
    stream: TextIO | None = None,
    include_phi: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Route structlog and standard logging to ``stream`` (stderr) in one format at ``level``.

    ``fields`` are added to every line of this process (a worker's index).
    """
    stream = stream or sys.stderr
    console = output_format == "console" or (output_format == "auto" and stream.isatty())
    shared: list[Any] = [
        _ProcessFields(fields or {}),
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        PhiFilter(include_phi_at_debug=include_phi),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.addFilter(PeerNoiseFilter())
    processors: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not console:
        processors.append(structlog.processors.format_exc_info)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[*processors, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # library warnings as log lines in the same format
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO/DEBUG; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # pika logs ~7 ERROR lines (one with a traceback) per failed reconnect; the relay says what
    # matters (one WARNING when the broker is lost, one INFO when back), so pika is DEBUG only.
    logging.getLogger("pika").setLevel(logging.WARNING)
    debug = logging.getLevelName(level) <= logging.DEBUG
    handler.addFilter(DemoteToDebug("pika", enabled=debug))


class DemoteToDebug(logging.Filter):
    """Makes a library's records DEBUG lines without traceback, or drops them above DEBUG.

    On the handler, not the library's logger: a logger's filters miss its children's records.
    """

    def __init__(self, name: str, *, enabled: bool) -> None:
        super().__init__()
        self._prefix = f"{name}."
        self._library = name
        self._enabled = enabled

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote ``record`` if it is the library's (kept only when the level is DEBUG)."""
        if record.name != self._library and not record.name.startswith(self._prefix):
            return True
        if not self._enabled:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A bound logger for ``name`` (use ``.bind`` for per-association or per-study context)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
