"""Several listener nodes for one test: HAProxy in front of them, and where each file landed."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from tests.support import ListenerProcess, free_port, http_get, port_open, wait_for

NODE_NAMES = ("node-a", "node-b", "node-c")
Nodes = dict[str, ListenerProcess]  # node name -> its listener process, in NODE_NAMES order


def haproxy_binary() -> str:
    """HAProxy's path; fails (never skips) without it (scripts/setup-dev installs it)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise AssertionError("HAProxy is not installed (apt-get install -y haproxy)")
    return found


def haproxy_config(nodes: Nodes, *, port: int, stats_port: int) -> str:
    """A TCP load balancer on ``port`` over ``nodes``, each health-checked on its /readyz.

    A node is taken out after one failed check and back after one good one, 200 ms apart, so a
    test sees it happen at once; a connection refused by a node is tried on another.
    """
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{node.port} port {node.metrics_url.rsplit(':', 1)[1]}"
        for name, node in nodes.items()
    )
    return f"""global
    maxconn 256

defaults
    mode tcp
    timeout connect 1s
    timeout client 5m
    timeout server 5m
    retries 3
    option redispatch 1

frontend dicom
    bind 127.0.0.1:{port}
    default_backend listeners

backend listeners
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 1
{servers}

listen stats
    mode http
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@dataclass
class HaProxy:
    """``haproxy -db`` (in the foreground) in front of ``nodes``; :meth:`stop` ends it by pid."""

    nodes: Nodes
    directory: Path
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> HaProxy:
        """Start HAProxy and wait until it reports every node up."""
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(self.nodes, port=self.port, stats_port=self.stats_port))
        log = (self.directory / "haproxy.log").open("wb")
        self.process = subprocess.Popen(
            [haproxy_binary(), "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(lambda: self._alive() and port_open(self.stats_port), timeout=15, what="HAProxy")
        wait_for(self._all_up, timeout=15, what="HAProxy to see every node up")
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.directory / "haproxy.log").read_text()
            raise AssertionError(f"haproxy exited early:\n{log}")
        return True

    def server_states(self) -> dict[str, str]:
        """Node name -> its state as HAProxy sees it (UP, DOWN, ...)."""
        status, body = http_get(f"http://127.0.0.1:{self.stats_port}/stats;csv")
        assert status == 200, body
        rows = csv.DictReader(io.StringIO(body.lstrip("# ")))
        return {
            row["svname"]: row["status"].split()[0] for row in rows if row["svname"] in self.nodes
        }

    def _all_up(self) -> bool:
        return set(self.server_states().values()) == {"UP"}

    def wait_down(self, name: str) -> None:
        """Wait until HAProxy has taken node ``name`` out."""
        wait_for(
            lambda: self.server_states()[name] == "DOWN",
            timeout=10,
            what=f"HAProxy to take {name} out",
        )

    def stop(self) -> None:
        """Stop HAProxy (by its pid)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def write_study(study: list[Dataset], directory: Path) -> dict[Path, str]:
    """Each dataset saved as a file under ``directory``; file -> its SOP Instance UID."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {}
    for index, dataset in enumerate(study):
        uid = str(dataset.SOPInstanceUID)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        path = directory / f"{index:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files[path] = uid
    return files


def holders(nodes: Nodes, uids: set[str]) -> dict[str, str]:
    """SOP Instance UID -> the node whose data_dir holds its file, for the ``uids`` found."""
    held: dict[str, str] = {}
    for name, node in nodes.items():
        for path in (node.data_dir / "instances").rglob("*.dcm"):
            if path.stem in uids:
                held[path.stem] = name
    return held
