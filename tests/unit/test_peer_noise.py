"""pynetdicom's lines about what a peer sent: single WARNING lines, no traceback, rate-limited."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from listener.logs import PeerNoiseFilter

Logs = Callable[[], list[dict[str, Any]]]


def refused_pdu(logger: logging.Logger) -> None:
    """What pynetdicom's DUL logs for one refused PDU: an ERROR, then the exception."""
    logger.error("Connection closed before the entire PDU was received")
    try:
        raise OSError(90, "PDU type 0x04 of 4294967295 bytes refused")
    except OSError as exc:
        logger.exception(exc)


def test_refused_pdu_becomes_warning_lines_without_traceback(json_logs: Logs) -> None:
    """Neither line keeps its traceback or its ERROR level; the exception's text stays."""
    refused_pdu(logging.getLogger("pynetdicom.dul"))

    lines = [line for line in json_logs() if line["logger"] == "pynetdicom.dul"]

    assert [line["level"] for line in lines] == ["warning", "warning"]
    assert not any("exception" in line for line in lines)
    assert "PDU type 0x04 of 4294967295 bytes refused" in lines[1]["event"]


def test_pynetdicom_lines_are_limited_per_minute_then_summarised(json_logs: Logs) -> None:
    """Of 30 refused PDUs (60 lines) 10 lines are written; a summary counts the rest."""
    now = [0.0]
    handler = logging.getLogger().handlers[0]
    handler.filters[:] = [PeerNoiseFilter(limit=10, window=60, clock=lambda: now[0])]
    logger = logging.getLogger("pynetdicom.dul")
    for _ in range(30):
        refused_pdu(logger)
    now[0] = 61
    logger.warning("one more")

    lines = json_logs()
    from_pynetdicom = [line for line in lines if line["logger"] == "pynetdicom.dul"]
    [summary] = [line for line in lines if line["logger"] == "listener.logs"]
    assert len(from_pynetdicom) == 11  # 10 in the first minute, "one more" in the next
    assert summary["event"] == ("pynetdicom lines not logged: 50 from unknown in 60 s")


def test_handler_failures_keep_level_and_traceback(json_logs: Logs) -> None:
    """A failure in our own event handler (pynetdicom.events) is an ERROR with its traceback."""
    try:
        raise ValueError("bug in a handler")
    except ValueError:
        logging.getLogger("pynetdicom.events").exception("Exception in handler")

    [line] = [line for line in json_logs() if line["logger"] == "pynetdicom.events"]
    assert line["level"] == "error"
    assert "ValueError: bug in a handler" in line["exception"]
