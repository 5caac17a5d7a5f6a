"""Module boundaries from DESIGN.md: a pure core, one adapter module per external library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from listener.scp import storage_sop_classes, transfer_syntaxes

PACKAGE = Path(__file__).parents[2] / "listener"
PURE = [
    "model.py",
    "aggregator.py",
    "ratelimit.py",
    *(f"fhir/{p.name}" for p in (PACKAGE / "fhir").glob("*.py")),
]
ADAPTERS = {
    "pynetdicom": "scp/",
    "pika": "publisher.py",
    "sqlite3": "journal",
    "psycopg": "journal_pg",
    "psycopg_pool": "journal_pg",
    "starlette": "dicomweb/",
    "uvicorn": "dicomweb/",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_no_network_storage_or_logging_library(module: str) -> None:
    """model, aggregator and fhir import none of pynetdicom, pika, sqlite3, psycopg or structlog."""
    forbidden = {"pynetdicom", "pika", "sqlite3", "psycopg", "structlog", "logging"}

    assert imported_roots(PACKAGE / module) & forbidden == set()


@pytest.mark.parametrize(("library", "owner"), sorted(ADAPTERS.items()))
def test_each_library_is_imported_by_its_adapter_only(library: str, owner: str) -> None:
    """Each library has one owner: pynetdicom scp/, pika publisher.py, sqlite3 journal*.py, ..."""
    importers = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if library in imported_roots(path)
    }

    assert importers
    assert all(path.startswith(owner) for path in importers), importers


def test_conformance_statement_lists_every_accepted_sop_class_and_transfer_syntax() -> None:
    """docs/conformance-statement.md names each SOP class and transfer syntax the SCP accepts."""
    statement = (PACKAGE.parent / "docs" / "conformance-statement.md").read_text()

    for uid in [*storage_sop_classes(), *transfer_syntaxes()]:
        assert f"| {uid} |" in statement, uid
