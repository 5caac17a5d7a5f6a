"""Guarantee "no patient data in logs": PHI keys are stripped at INFO and up, whoever logs them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from listener.logs import PHI_KEYS, configure_logging, get_logger

Emit = Callable[[str], dict[str, Any]]


@pytest.fixture
def emit_with_phi() -> Iterator[Callable[[bool], Emit]]:
    """Configure logging (DEBUG, JSON); return a function logging every PHI key at a level."""

    def configured(include_phi: bool) -> Emit:
        stream = io.StringIO()
        configure_logging(
            level="DEBUG", output_format="json", stream=stream, include_phi=include_phi
        )

        def emit(level: str) -> dict[str, Any]:
            values = {key: f"secret-{key}" for key in PHI_KEYS}
            getattr(get_logger("listener.test"), level)("event with phi", **values)
            line: dict[str, Any] = json.loads(stream.getvalue().splitlines()[-1])
            return line

        return emit

    yield configured
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


@pytest.mark.parametrize("include_phi", [False, True])
@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_phi_keys_never_reach_info_warning_or_error(
    emit_with_phi: Callable[[bool], Emit], level: str, include_phi: bool
) -> None:
    """At INFO, WARNING and ERROR no PHI key survives, even with logging.include_phi on."""
    line = emit_with_phi(include_phi)(level)
    assert line["level"] == level
    assert not PHI_KEYS & line.keys()
    assert "secret" not in json.dumps(line)


def test_phi_reaches_debug_only_with_include_phi(emit_with_phi: Callable[[bool], Emit]) -> None:
    """At DEBUG every PHI key is kept with logging.include_phi, and stripped without it."""
    assert emit_with_phi(True)("debug").keys() >= PHI_KEYS
    assert not PHI_KEYS & emit_with_phi(False)("debug").keys()


def test_the_phi_keys_cover_patient_identity() -> None:
    """Name, ID, birth date, sex and accession number are all treated as PHI."""
    assert {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "patient_sex",
        "accession_number",
    } <= PHI_KEYS
