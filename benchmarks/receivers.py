"""The receivers under test, each a process on a free localhost port.

Readiness is a real C-ECHO with DCMTK's echoscu: a bare TCP probe would leave an association slot
occupied until the listener's ARTIM timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import dcmtk, orthanc
from benchmarks.report import scrape_metrics, summarize_log

REPO = Path(__file__).resolve().parents[1]
LISTENER_AE = "DICOM-LISTENER"
ANY_AE = "ANY-SCP"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Receiver:
    """A receiving process: its name, called AE title, DICOM port and log."""

    name: str
    called_ae: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    output_dir: Path | None = None  # where it writes received files, when they can be counted
    metrics_port: int | None = None
    publishes_studies: bool = False  # True for the listener: each study ends up on the queue
    orthanc_dir: Path | None = None  # Orthanc's own directory (storage, index, configuration)
    http_port: int | None = None  # Orthanc's REST API, to count what it stored
    workers: int = 1  # a listener's dicom.workers (each serves metrics.port + its index)

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Return once a C-ECHO succeeds; raise if the process dies or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not dcmtk.echo(self.port, self.called_ae):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer C-ECHO within {timeout} s")
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the process's output."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        """Terminate the process (kill it if it does not exit in time); its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def spawn(
    name: str,
    command: list[str],
    work: Path,
    *,
    called_ae: str = ANY_AE,
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> Receiver:
    """Start ``command`` in ``cwd`` (default: this checkout); output to ``work/<name>.log``."""
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Receiver(name, called_ae, port, process, log_path)


def listener_environment(
    *, port: int, data_dir: Path, metrics_port: int, quiet_period: float, amqp: dict[str, str]
) -> dict[str, str]:
    """The process environment for ``python -m listener`` (inherited LISTENER_* dropped)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_")}
    return {
        **inherited,
        "LISTENER_DICOM__PORT": str(port),
        "LISTENER_DICOM__HOST": "127.0.0.1",
        "LISTENER_STORAGE__DATA_DIR": str(data_dir),
        "LISTENER_STORAGE__MIN_FREE_MB": "64",
        "LISTENER_METRICS__HOST": "127.0.0.1",
        "LISTENER_METRICS__PORT": str(metrics_port),
        "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": str(quiet_period),
        "LISTENER_LOGGING__FORMAT": "json",
        "LISTENER_LOGGING__LEVEL": "WARNING",
        **amqp,
    }


def start_listener(
    work: Path,
    *,
    name: str,
    quiet_period: float,
    amqp: dict[str, str],
    extra: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> Receiver:
    """``python -m listener`` run from checkout ``cwd``, its data directory under ``work``.

    ``extra``: more settings.
    """
    port, metrics_port = free_port(), free_port()
    env = listener_environment(
        port=port,
        data_dir=work / f"{name}-data",
        metrics_port=metrics_port,
        quiet_period=quiet_period,
        amqp=amqp,
    )
    env.update(extra or {})
    env["PYTHONPATH"] = str(cwd)  # this checkout's code, whichever one the venv installed
    command = [sys.executable, "-m", "listener"]
    receiver = spawn(name, command, work, called_ae=LISTENER_AE, port=port, env=env, cwd=cwd)
    receiver.metrics_port = metrics_port
    receiver.publishes_studies = True
    return receiver


def wait_workers_ready(
    listener: Receiver, workers: int, timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Return once each of the listener's ``workers`` answers 200 on its ``/readyz``.

    A C-ECHO reaches one worker only: with ``dicom.workers`` > 1 each serves its own metrics port
    (``metrics.port + i``).
    """
    assert listener.metrics_port is not None
    deadline = time.monotonic() + timeout
    for index in range(workers):
        url = f"http://127.0.0.1:{listener.metrics_port + index}/readyz"
        while not _answers(url):
            if listener.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{listener.name} worker {index} not ready:\n{listener.log_tail()}"
                )
            time.sleep(0.2)


def _answers(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def worker_metrics(listener: Receiver, workers: int) -> list[dict[str, float]]:
    """Each of the listener's ``workers``' metrics (worker ``i`` on ``metrics.port + i``)."""
    assert listener.metrics_port is not None
    return [scrape_metrics(listener.metrics_port + index) for index in range(workers)]


def stop_listener(listener: Receiver, info: dict[str, Any]) -> str:
    """Stop ``listener`` (SIGTERM), record its exit code and log summary in ``info``; a problem."""
    info["exit_code"] = code = listener.stop()
    info["log"] = log = summarize_log(listener.log_path.read_text(errors="replace"))
    errors = {k: v for k, v in log["events"].items() if not k.startswith("warning")}
    if code != 0 or errors or log["unparsed"]:
        return (
            f"{listener.name}: exit code {code}, errors {errors}, "
            f"{len(log['unparsed'])} non-JSON log lines (first: {log['unparsed'][:1]})"
        )
    return ""


def start_storescp(work: Path, *, tcp_nodelay: bool) -> Receiver:
    """DCMTK's storescp writing every file, one forked child per association.

    DCMTK reads ``TCP_NODELAY`` on the receiving side too: without it storescp's own writes (its
    C-STORE responses) are subject to Nagle's algorithm.
    """
    name = "storescp-nd" if tcp_nodelay else "storescp"
    output_dir = work / f"{name}-out"
    output_dir.mkdir()
    port = free_port()
    command = [dcmtk.tool("storescp"), "--fork", "-od", str(output_dir), str(port)]
    env = dcmtk.storescu_environment(tcp_nodelay)
    receiver = spawn(name, command, work, port=port, env=env)
    receiver.output_dir = output_dir
    return receiver


def start_orthanc(work: Path, *, tcp_nodelay: bool, binary: str) -> Receiver:
    """Orthanc (``binary``) with a generated configuration and its own directories under ``work``.

    Like storescp, Orthanc's DICOM server (DCMTK) reads ``TCP_NODELAY`` from its environment:
    ``orthanc`` runs as configured by default (Nagle on), ``orthanc-nd`` with ``TCP_NODELAY=1``.
    """
    name = "orthanc-nd" if tcp_nodelay else "orthanc"
    directory = work / f"{name}-dir"
    port, http_port = free_port(), free_port()
    config = orthanc.write_configuration(directory, dicom_port=port, http_port=http_port)
    env = dcmtk.storescu_environment(tcp_nodelay)
    command = [binary, str(config)]
    receiver = spawn(name, command, work, called_ae=orthanc.ORTHANC_AE, port=port, env=env)
    receiver.orthanc_dir, receiver.http_port = directory, http_port
    return receiver


def start_ready(start: Callable[[int], Receiver], *, attempts: int = 3) -> Receiver:
    """``start(attempt)`` and wait for a C-ECHO; on a port taken meanwhile, again on new ports.

    ``free_port()`` probes a port and lets it go: another process (any outgoing connection uses
    the same ephemeral range) may take it before the receiver binds it.
    """
    for attempt in range(attempts):
        receiver = start(attempt)
        try:
            receiver.wait_ready()
            return receiver
        except RuntimeError:
            receiver.stop()
            if attempt == attempts - 1 or "already in use" not in receiver.log_tail():
                raise
    raise AssertionError("unreachable")


def start_bare_scp(work: Path) -> Receiver:
    """The bare pynetdicom SCP of :mod:`benchmarks.bare_scp`."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bare_scp", str(port)]
    return spawn("bare-scp", command, work, port=port)


def _status_kib(pid: int, field: str) -> int:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_rss_kib(pid: int) -> int:
    """The peak resident set size (VmHWM) of process ``pid``, in KiB."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int:
    """The current resident set size (VmRSS) of process ``pid``, in KiB."""
    return _status_kib(pid, "VmRSS")
