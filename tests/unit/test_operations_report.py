"""Operator-facing output: check-config as TOML, the metrics exposition, pika's log lines."""

from __future__ import annotations

import io
import json
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from listener.config import ConfigError, describe, load_settings, setting_value
from listener.config.report import settings_lines, toml_value
from listener.logs import configure_logging
from listener.metrics import Metrics

ENV = {
    "LISTENER_AMQP__URL": "amqp://localhost:5672/%2F",
    "LISTENER_DICOM__ALLOWED_CALLING_AE_TITLES": '["CT 1", "MR\\"2"]',
    "LISTENER_DICOM__REMOTE_AES": '{"CT 1": "ct.example:104", "PACS": "10.0.0.1:11112"}',
    "LISTENER_DICOM__REQUIRE_CALLED_AE_TITLE": "false",
    "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "2.5",
    "LISTENER_STORAGE__DATA_DIR": "/var/lib/dicom listener/data",
    "LISTENER_FHIR__PATIENT_IDENTIFIER_SYSTEM": "urn:oid:1.2.3",
}


def test_check_config_output_parses_as_toml_with_the_effective_values() -> None:
    """Every printed line is TOML; parsed, each key holds its effective value (paths as text)."""
    loaded = load_settings(None, ENV)

    parsed = tomllib.loads("\n".join(settings_lines(loaded.settings, loaded.sources)))

    for key, _default, _doc in describe():
        section = parsed
        *path, name = key.split(".")
        for part in path:
            section = section[part]
        value = setting_value(loaded.settings, key)
        assert section[name] == (str(value) if isinstance(value, Path) else value), key


def test_check_config_output_loads_back_as_the_same_settings(tmp_path: Path) -> None:
    """The output, saved as a config file, gives the same settings as the original."""
    loaded = load_settings(None, ENV)
    saved = tmp_path / "effective.toml"
    saved.write_text("\n".join(settings_lines(loaded.settings, loaded.sources)) + "\n")

    assert load_settings(saved, {}).settings == loaded.settings


def test_check_config_shows_true_false_and_quoted_paths_not_python_reprs() -> None:
    """Booleans read true/false and paths are quoted strings, not True or PosixPath(...)."""
    loaded = load_settings(None, ENV)
    lines = settings_lines(loaded.settings, loaded.sources)

    assert "dicom.require_called_ae_title = false  # env" in lines
    assert 'storage.data_dir = "/var/lib/dicom listener/data"  # env' in lines
    assert not any("PosixPath" in line or "True" in line for line in lines)


def test_toml_strings_escape_quotes_and_control_characters() -> None:
    """Quotes, backslashes, newlines and DEL survive a TOML round trip."""
    text = 'a "b" \\ c\nd\te\x7f\x01'

    assert tomllib.loads(f"v = {toml_value(text)}")["v"] == text


@pytest.mark.parametrize("url", ["amqp://h:99999/", "amqp://h:0/", "amqp://u:p@h:port/"])
def test_amqp_url_with_a_bad_port_is_a_config_error(url: str) -> None:
    """A port outside 1-65535, or not a number, in amqp.url is refused naming the key."""
    with pytest.raises(ConfigError, match=r"^amqp\.url: has an invalid port"):
        load_settings(None, {"LISTENER_AMQP__URL": url})


def test_metrics_exposition_has_no_created_series() -> None:
    """Counters and histograms export no ``_created`` samples."""
    metrics = Metrics()
    metrics.instances_received.labels("stored").inc()
    metrics.journal_commit_seconds.observe(0.01)

    text = metrics.render().decode()

    assert "dicom_listener_instances_received_total" in text
    assert "_created" not in text


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


def _pika_failure() -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError:
        logging.getLogger("pika.adapters.utils.io_services_utils").exception("connect failed")
    logging.getLogger("pika.adapters.blocking_connection").error("Connection workflow failed")


def test_pika_errors_are_not_logged_at_info(log_stream: io.StringIO) -> None:
    """At INFO, pika's own ERROR lines (and their tracebacks) are not written."""
    configure_logging(level="INFO", output_format="json", stream=log_stream)

    _pika_failure()

    assert log_stream.getvalue() == ""


def test_pika_errors_become_debug_lines_without_traceback(log_stream: io.StringIO) -> None:
    """At DEBUG, pika's ERROR lines appear as DEBUG lines with no traceback."""
    configure_logging(level="DEBUG", output_format="json", stream=log_stream)

    _pika_failure()

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["debug", "debug"]
    assert not any("exception" in line or "exc_info" in line for line in lines)
