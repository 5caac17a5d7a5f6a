"""Results of a run: the measured cells, machine facts, the printed table and the JSON file."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import platform
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pika.exceptions

MB = 1_000_000
MIB_PER_KIB = 1 / 1024
STORESCP = "storescp"  # as started by default: Nagle's algorithm on for its own writes
STORESCP_ND = "storescp-nd"  # started with TCP_NODELAY=1
ORTHANC = "orthanc"  # Orthanc as configured by default: Nagle on for its own writes
ORTHANC_ND = "orthanc-nd"  # started with TCP_NODELAY=1
LISTENER = "listener"


@dataclass
class Cell:
    """One measurement: a receiver, an instance size, an association count, TCP_NODELAY on/off."""

    receiver: str
    size: str
    associations: int
    tcp_nodelay: bool
    instances: int
    bytes: int
    seconds: float
    problem: str = ""
    instances_per_s: float | None = None
    mb_per_s: float | None = None
    ratio_to_storescp: float | None = None
    ratio_to_storescp_nd: float | None = None
    ratio_to_orthanc: float | None = None
    ratio_to_orthanc_nd: float | None = None

    def __post_init__(self) -> None:
        if not self.problem and self.seconds > 0:
            self.instances_per_s = self.instances / self.seconds
            self.mb_per_s = self.bytes / MB / self.seconds

    @property
    def key(self) -> tuple[str, int, bool]:
        """The cell's coordinates apart from the receiver."""
        return self.size, self.associations, self.tcp_nodelay

    def fail(self, problem: str) -> None:
        """Mark the cell failed: its rates are not reported."""
        self.problem = problem
        self.instances_per_s = self.mb_per_s = None
        self.ratio_to_storescp = self.ratio_to_storescp_nd = None
        self.ratio_to_orthanc = self.ratio_to_orthanc_nd = None


def _ratios(cells: list[Cell], reference: str) -> list[float | None]:
    """Each cell's instances/s relative to ``reference``'s in the same cell."""
    base = {cell.key: cell.instances_per_s for cell in cells if cell.receiver == reference}
    ratios: list[float | None] = []
    for cell in cells:
        divisor = base.get(cell.key)
        ratios.append(cell.instances_per_s / divisor if cell.instances_per_s and divisor else None)
    return ratios


def set_ratios(cells: list[Cell]) -> None:
    """Each cell's instances/s relative to both storescps' and both Orthancs' in the same cell."""
    for cell, plain, nodelay, orthanc, orthanc_nd in zip(
        cells,
        _ratios(cells, STORESCP),
        _ratios(cells, STORESCP_ND),
        _ratios(cells, ORTHANC),
        _ratios(cells, ORTHANC_ND),
        strict=True,
    ):
        cell.ratio_to_storescp, cell.ratio_to_storescp_nd = plain, nodelay
        cell.ratio_to_orthanc, cell.ratio_to_orthanc_nd = orthanc, orthanc_nd


def orthanc_ratio_lines(cells: list[Cell]) -> list[str]:
    """The listener's instances/s relative to Orthanc's, cell by cell (none without Orthanc)."""
    lines = [
        f"{cell.receiver} / orthanc, {cell.size} x{cell.associations} storescu TCP_NODELAY="
        f"{int(cell.tcp_nodelay)}: {ratio_text(cell.ratio_to_orthanc)} (orthanc as configured),"
        f" {ratio_text(cell.ratio_to_orthanc_nd)} (orthanc-nd, TCP_NODELAY=1)"
        for cell in cells
        if cell.receiver.startswith(LISTENER)
        and (cell.ratio_to_orthanc is not None or cell.ratio_to_orthanc_nd is not None)
    ]
    return lines


# What ends a benchmark run early (recorded as its error, the numbers so far still written).
RUN_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    OSError,
    subprocess.SubprocessError,
    pika.exceptions.AMQPError,
)


@dataclass
class RunRecord:
    """What every benchmark run writes: machine, settings, problems, error, wall time."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    error: str = ""
    wall_seconds: float = 0.0

    def write(self, path: Path) -> None:
        """Write the results as indented JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


def run_settings(options: Any, **more: Any) -> dict[str, Any]:
    """A run's options (a dataclass with ``json_path``) as JSON-ready settings, plus ``more``."""
    return {**dataclasses.asdict(options), "json_path": str(options.json_path), **more}


@dataclass
class Results(RunRecord):
    """Everything a throughput run measured, as written to the JSON file."""

    tcp_nodelay: dict[str, Any] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    listener: dict[str, Any] = field(default_factory=dict)
    listener_workers: dict[str, Any] = field(default_factory=dict)  # the listener-wW's exit
    latency: dict[str, Any] = field(default_factory=dict)
    rss_study: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def machine_info(dcmtk_version: str) -> dict[str, Any]:
    """CPU count and model, memory, kernel, Python and library versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory_total": _proc_field("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dcmtk": dcmtk_version,
        "pydicom": metadata.version("pydicom"),
        "pynetdicom": metadata.version("pynetdicom"),
        "load_average_at_start": load_average(),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews the numbers)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _proc_field(path: str, name: str) -> str:
    """The value of the first ``name: value`` line of a /proc file ("" when absent)."""
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def scrape_metrics(port: int) -> dict[str, float]:
    """The listener's ``dicom_listener_*`` samples worth reporting, by sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = re.compile(
        r"dicom_listener_(instances_received_total|received_bytes_total|associations_total"
        r"|publish_failures_total|(journal_commit|publish_latency)_seconds_(sum|count))\b"
    )
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if wanted.match(line))
    return {name: float(value) for name, value in samples}


def summarize_log(text: str) -> dict[str, Any]:
    """Counts of log lines by level, distinct warning/error events, first error lines, unparsed.

    The first error lines are kept whole: what went wrong, not only that it did.
    """
    levels: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    errors: list[dict[str, Any]] = []
    unparsed: list[str] = []
    for line in filter(str.strip, text.splitlines()):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            unparsed.append(line)
            continue
        level = str(entry.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical"):
            events[f"{level}: {entry.get('event')}"] += 1
        if level in ("error", "critical") and len(errors) < 5:
            errors.append(entry)
    return {
        "levels": dict(levels),
        "events": dict(events),
        "errors": errors,
        "unparsed": unparsed[:20],
    }


def rate_text(value: float | None, digits: int) -> str:
    """A rate for the table, or ``FAILED``."""
    return "FAILED" if value is None else f"{value:.{digits}f}"


def ratio_text(value: float | None) -> str:
    """A ratio for the table, or ``-``."""
    return "-" if value is None else f"{value:.2f}"


def table(cells: list[Cell]) -> str:
    """The throughput table, one line per receiver and cell."""
    header = (
        f"{'size':<6}{'assoc':>6}  {'storescu TCP_NODELAY':<21}{'receiver':<12}"
        f"{'inst/s':>9}{'MB/s':>9}{'x storescp':>12}{'x storescp-nd':>15}"
    )
    lines = [header, "-" * len(header)]
    for cell in cells:
        nodelay = "=1 (Nagle off)" if cell.tcp_nodelay else "unset (Nagle on)"
        lines.append(
            f"{cell.size:<6}{cell.associations:>6}  {nodelay:<21}{cell.receiver:<12}"
            f"{rate_text(cell.instances_per_s, 1):>9}{rate_text(cell.mb_per_s, 2):>9}"
            f"{ratio_text(cell.ratio_to_storescp):>12}{ratio_text(cell.ratio_to_storescp_nd):>15}"
        )
    legend = (
        "storescp: storescp --fork -od DIR PORT as is (Nagle on for its own writes); "
        "storescp-nd: the same with TCP_NODELAY=1 in its environment; orthanc, orthanc-nd: "
        "Orthanc's defaults (SQLite index), without and with TCP_NODELAY=1; MB = 10^6 bytes"
    )
    return "\n".join([*lines, legend])


def mib(kib: int | None) -> str:
    """KiB as MiB for printing."""
    return "n/a" if kib is None else f"{kib * MIB_PER_KIB:.1f} MiB"


def summary_lines(results: Results) -> list[str]:
    """The lines printed after the table: RSS, latency, TCP_NODELAY, listener health, problems."""
    lines = [
        f"TCP_NODELAY in DCMTK {results.machine['dcmtk']} storescu: "
        f"{results.tcp_nodelay.get('conclusion', 'not probed')}. storescp reads the same"
        " variable for its own writes: storescp runs without it, storescp-nd with TCP_NODELAY=1"
    ]
    lines += orthanc_ratio_lines(results.cells)
    lines += [f"SKIPPED: {note}" for note in results.skipped]
    lines += _listener_lines(results.listener)
    lines += _rss_study_lines(results.rss_study)
    lines += _latency_lines(results.latency)
    lines += [f"PROBLEM: {problem}" for problem in results.problems]
    if results.error:
        lines.append(f"ERROR: {results.error}")
    lines.append(
        f"wall time of the run: {results.wall_seconds:.1f} s; load average at start "
        f"{results.machine['load_average_at_start']}, at end "
        f"{results.machine.get('load_average_at_end', '?')} ({results.machine['cpu_count']} CPUs)"
    )
    return lines


def _listener_lines(listener: dict[str, Any]) -> list[str]:
    """RSS, metrics and log health of the listener that served the throughput runs."""
    if not listener:
        return []
    metrics = listener.get("metrics", {})
    outcomes = {
        match.group(1): int(value)
        for name, value in metrics.items()
        if (match := re.search(r'instances_received_total\{outcome="([^"]+)"', name))
    }
    commits = metrics.get("dicom_listener_journal_commit_seconds_count", 0.0)
    commit_ms = 1000 * metrics.get("dicom_listener_journal_commit_seconds_sum", 0.0) / commits
    log = listener.get("log", {})
    return [
        f"listener peak RSS after the throughput runs: {mib(listener.get('peak_rss_kib'))}"
        f" (VmHWM; {mib(listener.get('rss_after_start_kib'))} after start-up)",
        f"listener C-STORE outcomes: {outcomes}; mean journal commit {commit_ms:.2f} ms"
        if commits
        else f"listener C-STORE outcomes: {outcomes}",
        f"listener exit code after SIGTERM: {listener.get('exit_code')}; log levels "
        f"{log.get('levels', {})}; events {log.get('events', {})}; "
        f"{len(log.get('unparsed', []))} non-JSON lines",
    ]


def _rss_study_lines(study: dict[str, Any]) -> list[str]:
    """Peak RSS of a fresh listener receiving one large study."""
    if not study.get("peak_rss_kib"):
        return []
    rate = study.get("instances_per_s")
    return [
        f"listener peak RSS for one study of {study['instances']} instances in one association:"
        f" {mib(study['peak_rss_kib'])} (VmHWM of a fresh listener;"
        f" {mib(study.get('peak_rss_before_kib'))} before the study);"
        f" sent at {rate_text(rate, 1)} inst/s; ImagingStudy with"
        f" {study.get('published_instance_count')} instances, {study.get('message_bytes')} bytes,"
        f" {study.get('publish_seconds_after_send', 0):.2f} s after storescu exited"
    ]


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    """Publish latency samples against the configured quiet period."""
    samples = latency.get("samples_seconds")
    if not samples:
        return []
    quiet = latency["quiet_period_seconds"]
    return [
        "publish latency (storescu exit -> ImagingStudy consumed from the queue), raw: "
        + ", ".join(f"{sample:.3f}" for sample in samples)
        + f" s (median {latency['median_seconds']:.3f} s); configured quiet period {quiet} s,"
        f" so quiet period + 250 ms = {quiet + 0.25:.3f} s"
    ]
