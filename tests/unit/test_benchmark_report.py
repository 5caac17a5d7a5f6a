"""The benchmark report's comparison of the listener with Orthanc."""

from __future__ import annotations

from benchmarks.report import Cell, orthanc_ratio_lines, set_ratios, summarize_log


def _cell(receiver: str, rate: float) -> Cell:
    """A small, one-association, Nagle-off cell of 100 instances at ``rate`` instances/s."""
    return Cell(receiver, "small", 1, True, 100, 4_000_000, 100 / rate)


def test_listener_rate_is_reported_relative_to_both_orthancs() -> None:
    """The listener's rate over orthanc's and over orthanc-nd's are each cell's rate quotients."""
    cells = [_cell("listener", 120.0), _cell("orthanc", 20.0), _cell("orthanc-nd", 200.0)]

    set_ratios(cells)

    assert orthanc_ratio_lines(cells) == [
        "listener / orthanc, small x1 storescu TCP_NODELAY=1: 6.00 (orthanc as configured),"
        " 0.60 (orthanc-nd, TCP_NODELAY=1)"
    ]


def test_no_orthanc_ratio_lines_without_orthanc_cells() -> None:
    """A run without Orthanc (skipped) prints no listener / orthanc line."""
    cells = [_cell("listener", 120.0), _cell("storescp", 20.0)]

    set_ratios(cells)

    assert orthanc_ratio_lines(cells) == []


def test_a_listener_with_workers_is_compared_with_orthanc_too() -> None:
    """The listener-wW of the 4-association cells gets its own listener / orthanc line."""
    cells = [
        Cell(receiver, "large", 4, True, 100, 52_500_000, 100 / rate)
        for receiver, rate in (("listener-w2", 300.0), ("orthanc", 60.0), ("orthanc-nd", 250.0))
    ]

    set_ratios(cells)

    assert orthanc_ratio_lines(cells) == [
        "listener-w2 / orthanc, large x4 storescu TCP_NODELAY=1: 5.00 (orthanc as configured),"
        " 1.20 (orthanc-nd, TCP_NODELAY=1)"
    ]


def test_a_listener_log_summary_keeps_the_first_error_lines_whole() -> None:
    """An error's own fields (what failed) are kept, not only its count."""
    log = "\n".join(
        [
            '{"level": "info", "event": "started"}',
            '{"level": "error", "event": "finishing studies failed; retrying", "error": "locked"}',
        ]
    )

    summary = summarize_log(log)

    assert summary["events"] == {"error: finishing studies failed; retrying": 1}
    assert summary["errors"] == [
        {"level": "error", "event": "finishing studies failed; retrying", "error": "locked"}
    ]
