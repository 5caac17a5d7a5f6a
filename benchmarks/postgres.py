"""A fresh PostgreSQL database, created before and dropped after (benchmarks and tests share it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"  # this machine kind: trust authentication


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on ``server`` (``postgresql://user@host:port``)."""
    return f"{server.rstrip('/')}/{name}"


@contextlib.contextmanager
def fresh_database(admin_url: str, *, prefix: str) -> Iterator[str]:
    """A new database named ``<prefix>_<random>``, dropped afterwards; yields its name.

    ``admin_url``: a database to connect to for CREATE and DROP (``.../postgres``). The drop uses
    ``WITH (FORCE)``, so listeners still connected do not keep it alive.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
