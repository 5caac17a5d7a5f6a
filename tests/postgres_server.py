"""A private PostgreSQL server for one test, which it may stop and start again at will.

The machine's shared server (127.0.0.1:5432) serves every other test, so a test that takes the
database away runs its own: Debian's server binaries (``/usr/lib/postgresql/*/bin``), a cluster
initialised in a temporary directory, listening on a free port on the loopback only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support import POSTGRES_HOST, free_port, postgres_url

_SERVER_USER = "postgres"  # PostgreSQL refuses to run as root


def server_binaries() -> Path:
    """The newest installed PostgreSQL server's bin directory; fails (never skips) without one."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise AssertionError(
            "PostgreSQL server binaries are missing (apt-get install -y postgresql)"
        )
    return found[-1].parent


class PrivatePostgres:
    """A PostgreSQL cluster of our own in a temporary directory; :meth:`close` removes it."""

    def __init__(self) -> None:
        self._bin = server_binaries()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="listener-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SERVER_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{POSTGRES_HOST}'",
            "unix_socket_directories": f"'{self.root}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _run(self, tool: str, *args: str) -> None:
        """Run a server tool, as the postgres user when we are root."""
        command = [str(self._bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected) and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        """True while the server's postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        with psycopg.connect(postgres_url("postgres", port=self.port), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return postgres_url(name, port=self.port)

    def close(self) -> None:
        """Stop the server if it runs and remove its files."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
