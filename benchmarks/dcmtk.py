"""DCMTK's command-line tools: finding the real binaries, sending with storescu, checking results.

pynetdicom installs Python apps also named ``storescu``, ``storescp`` and ``echoscu`` that may come
first on ``PATH``; every tool here is DCMTK's own, found by asking it for its version.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SUCCESS_LINE = "Received Store Response (Success)"
CALLING_AE = "BENCH-SCU"
SEND_TIMEOUT_SECONDS = 1800.0


@functools.cache
def tool(name: str) -> str:
    """Path of DCMTK's ``name``; raise when only pynetdicom's same-named app exists."""
    candidates = [f"/usr/bin/{name}", *(shutil.which(name, path=p) for p in os.get_exec_path())]
    for candidate in filter(None, candidates):
        try:
            version = _run([candidate, "--version"]).stdout
        except OSError:
            continue
        if "dcmtk" in version.lower():
            return candidate
    raise RuntimeError(f"DCMTK's {name} is not installed (apt-get install -y dcmtk)")


def _run(
    command: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` and capture its output as text (a failed exit is not an error)."""
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


def version() -> str:
    """DCMTK's version as storescu reports it, e.g. ``3.6.7``."""
    match = re.search(r"v(\d+\.\d+\.\d+)", _run([tool("storescu"), "--version"]).stdout)
    return match.group(1) if match else "unknown"


def echo(port: int, called_ae: str) -> bool:
    """True when a C-ECHO to ``called_ae`` on 127.0.0.1:``port`` succeeds."""
    command = [tool("echoscu"), "-aet", CALLING_AE, "-aec", called_ae, "127.0.0.1", str(port)]
    return _run(command).returncode == 0


def storescu_environment(tcp_nodelay: bool) -> dict[str, str]:
    """A DCMTK tool's environment: ``TCP_NODELAY=1`` when asked, no ``TCP_NODELAY`` otherwise."""
    environment = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tcp_nodelay:
        environment["TCP_NODELAY"] = "1"
    return environment


def storescu_command(port: int, called_ae: str, source: Path, *options: str) -> list[str]:
    """A storescu command sending every file under ``source`` in one association."""
    return [
        tool("storescu"),
        *options,
        "-aet",
        CALLING_AE,
        "-aec",
        called_ae,
        "+sd",
        "+r",
        "127.0.0.1",
        str(port),
        str(source),
    ]


@dataclass
class Send:
    """The outcome of one send: storescu processes started together, waited for together."""

    expected: int
    seconds: float
    returncodes: list[int]
    successes: int
    finished_at: float  # time.monotonic() when the last storescu exited
    log_tail: str

    @property
    def problem(self) -> str:
        """Why the send does not count, or "" when every file got a success response."""
        if any(code != 0 for code in self.returncodes):
            return f"storescu exit codes {self.returncodes}; {self.log_tail}"
        if self.successes != self.expected:
            return f"{self.successes}/{self.expected} success responses; {self.log_tail}"
        return ""


def send(
    port: int | Sequence[int],
    called_ae: str,
    sources: Sequence[Path],
    expected: int,
    *,
    tcp_nodelay: bool,
    log_dir: Path,
) -> Send:
    """Send ``sources`` with one storescu (one association) each, all started together.

    ``port``: every source to that port, or source ``i`` to ``port[i % len(port)]``.
    """
    ports = [port] if isinstance(port, int) else list(port)
    logs = [log_dir / f"storescu-{index}.log" for index in range(len(sources))]
    environment = storescu_environment(tcp_nodelay)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        for index, (source, log) in enumerate(zip(sources, logs, strict=True)):
            target = ports[index % len(ports)]
            command = storescu_command(target, called_ae, source, "-v")
            processes.append(_start(command, log, environment))
        returncodes = [_wait(process) for process in processes]
        finished = time.monotonic()
    finally:
        for process in processes:
            _kill(process)
    texts = [log.read_text(errors="replace") for log in logs]
    for log in logs:
        log.unlink()
    failed = [text for text, code in zip(texts, returncodes, strict=True) if code != 0]
    return Send(
        expected=expected,
        seconds=finished - started,
        returncodes=returncodes,
        successes=sum(text.count(SUCCESS_LINE) for text in texts),
        finished_at=finished,
        log_tail=_tail(failed[0] if failed else texts[-1]),
    )


def _start(command: list[str], log: Path, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` writing stdout and stderr to ``log``."""
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)


def _wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for ``process``; kill it (exit code -9) when it outlives the send timeout.

    A blocking wait, with a timer for the timeout: ``Popen.wait(timeout=...)`` polls with
    sleeps of up to 50 ms, which put every measured send time on a 50 ms grid (±8% on a
    0.6 s send).
    """
    timer = threading.Timer(SEND_TIMEOUT_SECONDS, process.kill)
    timer.start()
    try:
        return process.wait()
    finally:
        timer.cancel()


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs (after an interruption) and reap it."""
    if process.poll() is None:
        process.kill()
        process.wait()


def _tail(text: str, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of ``text``, joined with " | "."""
    return " | ".join([line for line in text.splitlines() if line.strip()][-lines:])


@dataclass(frozen=True)
class NagleProbe:
    """What storescu's trace log says about TCP_NODELAY, without and with ``TCP_NODELAY=1``."""

    without_env: list[str]
    with_env: list[str]

    @property
    def conclusion(self) -> str:
        """One sentence on what the environment variable does in this DCMTK build."""
        default_off = any("default value (0)" in line for line in self.without_env)
        disabled_on_request = any("disabling Nagle" in line for line in self.with_env)
        if default_off and disabled_on_request:
            return (
                "Nagle's algorithm stays ON by default (TCP_NODELAY not set: default value 0); "
                "TCP_NODELAY=1 makes storescu set the TCP_NODELAY socket option (Nagle OFF)"
            )
        return "unclear from storescu's trace log; see the lines recorded in the JSON"


def probe_nagle(port: int, called_ae: str, source: Path) -> NagleProbe:
    """Send ``source`` twice with ``--log-level trace`` and keep the lines about TCP_NODELAY."""
    results: list[list[str]] = []
    for tcp_nodelay in (False, True):
        command = storescu_command(port, called_ae, source, "--log-level", "trace")
        output = _run(command, env=storescu_environment(tcp_nodelay))
        text = output.stdout + output.stderr
        results.append(
            [line for line in text.splitlines() if re.search("nagle|tcp_nodelay", line, re.I)]
        )
    return NagleProbe(without_env=results[0], with_env=results[1])
