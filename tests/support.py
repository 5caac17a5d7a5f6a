"""Helpers shared by the tests: real peers (RabbitMQ, DCMTK, the listener process) and waiting."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pika
import pydicom.data
import pydicom.filereader
from fhir.resources.R4B.imagingstudy import ImagingStudy as R4ImagingStudy
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from benchmarks.postgres import fresh_database

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
PYDICOM_CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"
DICOMDIR_TESTS = PYDICOM_TEST_FILES / "dicomdirtests"
RABBITMQ_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

T = TypeVar("T")
_PORT_ATTEMPTS = 3  # starts of a listener whose chosen port was taken by someone else


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def spool_leftovers(spool: Path) -> list[Path]:
    """Files in ``spool`` holding data: what messages left behind.

    The empty files the listener makes ahead of need (``listener/scp/spool_pool.py``) do not
    count: every spool file in use holds at least its File Meta.
    """
    return [path for path in spool.iterdir() if path.stat().st_size > 0]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def dicom_files(root: Path) -> list[Path]:
    """Files under ``root`` meant as DICOM instances (no DICOMDIR, README or other data files)."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not path.name.startswith(("DICOMDIR", "README", "FileInfo"))
        and path.suffix not in (".txt", ".json", ".gz", ".icc", ".dump")
    )


# -- DCMTK -----------------------------------------------------------------------------------


def dcmtk_tool(name: str) -> str:
    """Path of DCMTK's ``name`` (pynetdicom installs same-named Python apps that shadow it)."""
    candidates = [f"/usr/bin/{name}", *(shutil.which(name, path=p) for p in os.get_exec_path())]
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except OSError:
            continue
        if "dcmtk" in version.lower():
            return candidate
    raise AssertionError(f"DCMTK's {name} is not installed (apt-get install -y dcmtk)")


@dataclass
class StoreRun:
    """What storescu reported: which files were stored successfully, its exit code and output."""

    returncode: int
    succeeded: list[Path]
    output: str


def storescu(port: int, files: Iterable[Path], *extra: str, ae_title: str = "STORESCU") -> StoreRun:
    """Send ``files`` with DCMTK's storescu in one association, not halting on failures."""
    paths = list(files)
    command = [
        dcmtk_tool("storescu"),
        "-v",
        "-nh",
        "-aet",
        ae_title,
        "-aec",
        "DICOM-LISTENER",
        *extra,
        "127.0.0.1",
        str(port),
        *map(str, paths),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    succeeded: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            succeeded.append(current)
    return StoreRun(result.returncode, succeeded, output)


# storescu only proposes a compressed transfer syntax when told which one; this option makes it
# propose a file's own syntax, so the instance travels (and is stored) exactly as it is on disk.
_STORESCU_PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
}


def transfer_syntax_of(path: Path) -> str:
    """The file's transfer syntax UID, or "" when it has no readable file meta."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - any unreadable header simply has no syntax to propose
        return ""
    return str(meta.get("TransferSyntaxUID", ""))


def storescu_as_sent(port: int, files: Iterable[Path]) -> StoreRun:
    """Send every file in its own transfer syntax (one storescu -R run per syntax)."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        option = _STORESCU_PROPOSE.get(transfer_syntax_of(path), "")
        groups.setdefault(option, []).append(path)
    runs = [
        storescu(port, paths, "-R", *([option] if option else []))
        for option, paths in sorted(groups.items())
    ]
    return StoreRun(
        returncode=max(run.returncode for run in runs),
        succeeded=[path for run in runs for path in run.succeeded],
        output="\n".join(run.output for run in runs),
    )


# -- GDCM ------------------------------------------------------------------------------------

# gdcmscu 3.0 (Debian's libgdcm-tools) aborts with this exception while it handles the release
# response, after every store has completed, whatever the peer (DCMTK's storescp too).
_GDCMSCU_RELEASE_CRASH = "ProtocolStream as nullptr is invalid"


def gdcmscu(port: int, files: Iterable[Path], *, ae_title: str = "GDCMSCU") -> StoreRun:
    """Send ``files`` with GDCM's gdcmscu in one association, each in its own transfer syntax."""
    tool = shutil.which("gdcmscu")
    if tool is None:
        raise AssertionError("GDCM's gdcmscu is not installed (apt-get install -y libgdcm-tools)")
    paths = list(files)
    # Only its debug output (-D) names each file stored successfully.
    command = [tool, "-D", "--store", "--call", "DICOM-LISTENER", "--aetitle", ae_title]
    command += ["127.0.0.1", str(port), *map(str, paths)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    succeeded = [
        path for path in paths if f"C-Store of file {path} was successful." in output.splitlines()
    ]
    returncode = result.returncode
    if returncode in (-signal.SIGABRT, 128 + signal.SIGABRT) and _GDCMSCU_RELEASE_CRASH in output:
        returncode = 0  # its own crash after the release, see above
    return StoreRun(returncode, succeeded, output)


# -- PostgreSQL ------------------------------------------------------------------------------

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))  # as scripts/setup-dev


def postgres_url(database: str, *, port: int = POSTGRES_PORT) -> str:
    """The URL of ``database`` on this machine's PostgreSQL (trust authentication)."""
    return f"postgresql://postgres@{POSTGRES_HOST}:{port}/{database}"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the real PostgreSQL, dropped afterwards; yields its name.

    Fails (never skips) when PostgreSQL does not answer: scripts/setup-dev starts it.
    """
    if not port_open(POSTGRES_PORT, POSTGRES_HOST):
        raise AssertionError(
            f"PostgreSQL is not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}; run scripts/setup-dev"
        )
    with fresh_database(postgres_url("postgres"), prefix="listener_test") as name:
        yield name


# -- RabbitMQ --------------------------------------------------------------------------------


def require_broker() -> None:
    """Fail (never skip) when RabbitMQ is not reachable."""
    params = pika.URLParameters(RABBITMQ_URL)
    if not port_open(params.port, params.host):
        raise AssertionError(
            f"RabbitMQ is not reachable at {params.host}:{params.port}; start it with "
            "'rabbitmq-server -detached'"
        )


@dataclass
class Received:
    """One consumed message."""

    properties: BasicProperties
    body: bytes

    @property
    def resource(self) -> dict[str, Any]:
        """The body as JSON."""
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class AmqpTopology:
    """A unique exchange and queue for one test, deleted afterwards."""

    exchange: str = field(default_factory=lambda: f"test-x-{uuid.uuid4().hex[:10]}")
    queue: str = field(default_factory=lambda: f"test-q-{uuid.uuid4().hex[:10]}")
    routing_key: str = "imagingstudy"

    def env(self) -> dict[str, str]:
        """Listener environment overrides pointing at this topology."""
        return {
            "LISTENER_AMQP__URL": RABBITMQ_URL,
            "LISTENER_AMQP__EXCHANGE": self.exchange,
            "LISTENER_AMQP__QUEUE": self.queue,
            "LISTENER_AMQP__ROUTING_KEY": self.routing_key,
        }

    def _channel(self) -> tuple[pika.BlockingConnection, BlockingChannel]:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        return connection, connection.channel()

    def _take(self, channel: BlockingChannel) -> tuple[BlockingChannel, Received | None]:
        """One message, or None; a channel closed because the queue does not exist yet reopens."""
        try:
            method, properties, body = channel.basic_get(self.queue, auto_ack=True)
        except pika.exceptions.ChannelClosedByBroker:
            return channel.connection.channel(), None
        return channel, (Received(properties, body) if method is not None else None)

    def drain(self, count: int, *, timeout: float) -> list[Received]:
        """Take exactly ``count`` messages from the queue, waiting up to ``timeout``."""
        received, complete = self._collect(
            until=lambda received, _idle: len(received) >= count, timeout=timeout
        )
        if not complete:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {count} messages on {self.queue},"
                f" got {len(received)}"
            )
        return received

    def drain_until_quiet(self, *, quiet: float, timeout: float) -> list[Received]:
        """Take every message until none has arrived for ``quiet`` seconds (or ``timeout``)."""
        received, _complete = self._collect(
            until=lambda _received, idle: idle >= quiet, timeout=timeout
        )
        return received

    def _collect(
        self, *, until: Callable[[list[Received], float], bool], timeout: float
    ) -> tuple[list[Received], bool]:
        """Take messages until ``until(received, idle_seconds)``; say whether it was reached."""
        received: list[Received] = []
        connection, channel = self._channel()
        deadline = last = time.monotonic()
        deadline += timeout
        try:
            while not until(received, time.monotonic() - last):
                if time.monotonic() > deadline:
                    return received, False
                channel, message = self._take(channel)
                if message is None:
                    time.sleep(0.05)
                    continue
                received.append(message)
                last = time.monotonic()
        finally:
            connection.close()
        return received, True

    def depth(self) -> int:
        """Messages ready in the queue now (0 when it does not exist yet)."""
        connection, channel = self._channel()
        try:
            return int(channel.queue_declare(self.queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            connection.close()

    def delete(self) -> None:
        """Remove the exchange and queue."""
        connection, channel = self._channel()
        try:
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
        finally:
            connection.close()


def published_index(resource: dict[str, Any]) -> dict[str, set[str]]:
    """Series UID -> instance UIDs of a published ImagingStudy."""
    return {s["uid"]: {i["uid"] for i in s["instance"]} for s in resource["series"]}


def latest_versions(messages: list[Received]) -> dict[str, dict[str, Any]]:
    """The newest version of each study among ``messages``, each checked against the R4 model."""
    latest: dict[str, dict[str, Any]] = {}
    for message in messages:
        resource = message.resource
        R4ImagingStudy.model_validate(resource)
        previous = latest.get(resource["id"])
        if previous is None or int(previous["meta"]["versionId"]) < int(
            resource["meta"]["versionId"]
        ):
            latest[resource["id"]] = resource
    return latest


def published_instances(messages: list[Received]) -> list[str]:
    """SOP Instance UIDs in the newest version of every published study (repeats kept)."""
    return [
        uid
        for resource in latest_versions(messages).values()
        for uids in published_index(resource).values()
        for uid in uids
    ]


# -- a TCP proxy whose connection can be cut --------------------------------------------------


class TcpProxy:
    """Forwards a local port to ``target``; :meth:`cut` drops every connection and refuses new ones.

    Put between the listener and RabbitMQ, it simulates a broker outage of any length without
    touching the broker other tests use.
    """

    def __init__(
        self, target_host: str, target_port: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._target = (target_host, target_port)
        self._tls = tls  # when set, clients speak TLS to the proxy, which forwards plain bytes
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                if self._tls is not None:
                    client.settimeout(5)
                    client = self._tls.wrap_socket(client, server_side=True)
                    client.settimeout(None)
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every forwarded connection and refuse new ones until :meth:`restore`."""
        self._cut = True
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def restore(self) -> None:
        """Forward new connections again."""
        self._cut = False

    def close(self) -> None:
        """Stop the proxy."""
        self.cut()
        self._closed = True
        self._server.close()


def open_ct_association(port: int) -> tuple[Association, Dataset]:
    """An established association offering CT_small.dcm's storage context, and that dataset."""
    dataset = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    ae = AE(ae_title="SCU")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    assert association.is_established
    return association, dataset


# -- the listener as a process ---------------------------------------------------------------


@dataclass
class ListenerProcess:
    """``python -m listener`` with settings from the environment; its log lines parsed as JSON."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    log_path: Path = field(init=False)
    # Where standard output goes when it must stay apart from the logs (stderr); else with them.
    stdout_path: Path | None = None
    args: list[str] = field(
        default_factory=list
    )  # command-line arguments of ``python -m listener``
    # The ports came from free_port(): another process may take one between our probe and the
    # listener's bind, so a start that fails with EADDRINUSE retries on fresh ports.
    chosen_ports: bool = True

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"listener-{uuid.uuid4().hex[:8]}.log"

    def start(self, *, wait: bool = True) -> ListenerProcess:
        """Start the process; by default wait until it logs that the DICOM port is listening.

        Readiness is read from the log, not probed with a connection: a probe would itself be an
        abandoned connection occupying an association slot. A port taken meanwhile by someone
        else (free_port() races) is replaced and the start retried, when the ports were chosen.
        """
        for attempt in range(_PORT_ATTEMPTS):
            self._spawn()
            if not wait:
                return self
            try:
                wait_for(self._ready, timeout=20, what="the listener to accept connections")
                return self
            except AssertionError:
                if not self.may_retry() or attempt == _PORT_ATTEMPTS - 1:
                    raise
            self.choose_fresh_ports()
        raise AssertionError("unreachable")

    def may_retry(self) -> bool:
        """True when the process exited because a port we chose was taken meanwhile."""
        return self.chosen_ports and "Address already in use" in self.log_path.read_text()

    def choose_fresh_ports(self) -> None:
        """New DICOM and metrics ports (a port from free_port() can be taken before the bind)."""
        self.port = free_port()
        if "LISTENER_METRICS__PORT" in self.env:
            self.env["LISTENER_METRICS__PORT"] = str(free_port())

    def _spawn(self) -> None:
        environment = {
            **os.environ,
            "LISTENER_DICOM__PORT": str(self.port),
            "LISTENER_DICOM__HOST": "127.0.0.1",
            "LISTENER_STORAGE__DATA_DIR": str(self.data_dir),
            "LISTENER_LOGGING__FORMAT": "json",
            **self.env,
        }
        log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "listener", *self.args],
            env=environment,
            stdout=self.stdout_path.open("a") if self.stdout_path else log_file,
            stderr=log_file,
            text=True,
        )

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"listener exited early:\n{self.log_path.read_text()}")
        return any(self.events("dicom listening"))

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the process and return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def metrics_url(self) -> str:
        """Base URL of the metrics and health endpoints."""
        return f"http://127.0.0.1:{self.env['LISTENER_METRICS__PORT']}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``python -m listener ARGS`` with this listener's settings."""
        environment = {
            **os.environ,
            "LISTENER_DICOM__PORT": str(self.port),
            "LISTENER_STORAGE__DATA_DIR": str(self.data_dir),
            **self.env,
        }
        return subprocess.run(
            [sys.executable, "-m", "listener", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"event": line, "unparsed": True})
        return lines

    def events(self, name: str) -> Iterator[dict[str, Any]]:
        """Log lines whose event is ``name``."""
        return (line for line in self.logs() if line.get("event") == name)


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # slow under a loaded CI
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
