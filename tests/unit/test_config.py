"""Settings: defaults, TOML file, environment overrides and one-line errors naming the key."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from listener.cli import main
from listener.config import ConfigError, describe, load_settings, mask_url, setting_value

EXAMPLE = Path(__file__).parents[2] / "config" / "listener.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "listener.toml"
    path.write_text(text)
    return path


def test_defaults_apply_without_file_or_environment() -> None:
    """With nothing configured, every key has its documented default."""
    settings = load_settings().settings

    assert settings.dicom.port == 11112
    assert settings.aggregator.quiet_period_seconds == 30.0
    assert settings.amqp.url == "amqp://guest:guest@localhost:5672/%2F"
    assert settings.fhir.version == "R4"


def test_environment_overrides_file_and_sources_are_recorded(tmp_path: Path) -> None:
    """An env var beats the file, the file beats the default, and each value's origin is known."""
    path = write(tmp_path, '[dicom]\nport = 4242\nae_title = "FROMFILE"\n')

    loaded = load_settings(path, {"LISTENER_DICOM__PORT": "5151"})

    assert loaded.settings.dicom.port == 5151
    assert loaded.settings.dicom.ae_title == "FROMFILE"
    assert loaded.sources["dicom.port"] == "env"
    assert loaded.sources["dicom.ae_title"] == "file"
    assert loaded.sources["dicom.host"] == "default"


def test_lists_come_from_the_environment_as_json() -> None:
    """List settings are given as JSON in environment variables."""
    loaded = load_settings(None, {"LISTENER_DICOM__ALLOWED_CALLING_AE_TITLES": '["CT1", "MR2"]'})

    assert loaded.settings.dicom.allowed_calling_ae_titles == ["CT1", "MR2"]


def test_fractional_quiet_period_is_allowed() -> None:
    """quiet_period_seconds accepts fractions of a second."""
    loaded = load_settings(None, {"LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "0.25"})

    assert loaded.settings.aggregator.quiet_period_seconds == 0.25


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("[dicom]\nport = 70000\n", {}, "dicom.port"),
        ("", {"LISTENER_DICOM__PORT": "70000"}, "dicom.port"),
        ("", {"LISTENER_DICOM__PORT": "eleven"}, "dicom.port"),
        ('[fhir]\nversion = "R3"\n', {}, "fhir.version"),
        ("[dicom]\nprot = 104\n", {}, "dicom.prot"),
        ("[nonsense]\nkey = 1\n", {}, "nonsense"),
        ("", {"LISTENER_DICOM__PROT": "104"}, "LISTENER_DICOM__PROT"),
        ('[amqp]\nurl = "http://broker"\n', {}, "amqp.url"),
        ('[storage]\ndatabase_url = "mysql://db/x"\n', {}, "storage.database_url"),
        ("", {"LISTENER_STORAGE__DATABASE_URL": "postgresql://db:99999/x"}, "storage.database_url"),
        (
            '[storage]\ndatabase_password_file = "/nonexistent"\n',
            {},
            "storage.database_password_file",
        ),
        ("[aggregator]\nquiet_period_seconds = 0\n", {}, "aggregator.quiet_period_seconds"),
        ("[dicom]\nworkers = 0\n", {}, "dicom.workers"),
        ("[dicom]\nworkers = 4\n[metrics]\nport = 65533\n", {}, "dicom.workers"),
        ('[dicom]\nae_title = "WAY_TOO_LONG_AE_TITLE"\n', {}, "dicom.ae_title"),
        ('[fhir]\nendpoint_address = "https://pacs/wado?token=1"\n', {}, "fhir.endpoint_address"),
        ('[fhir]\nendpoint_address = "https://pacs/wado#part"\n', {}, "fhir.endpoint_address"),
        (
            "",
            {"LISTENER_DICOM__ALLOWED_CALLING_AE_TITLES": "CT1"},
            "dicom.allowed_calling_ae_titles",
        ),
    ],
)
def test_invalid_settings_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    """Each wrong value, unknown key or malformed list is refused with a message naming the key."""
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, toml), env)

    assert str(raised.value).startswith(key)


def test_a_postgresql_database_url_is_accepted() -> None:
    """storage.database_url takes postgresql:// URLs (and stays empty by default: SQLite)."""
    url = "postgresql://listener@db:5432/dicom"

    loaded = load_settings(None, {"LISTENER_STORAGE__DATABASE_URL": url})

    assert loaded.settings.storage.database_url == url
    assert load_settings(None, {}).settings.storage.database_url == ""


def test_invalid_toml_is_reported_with_the_file_name(tmp_path: Path) -> None:
    """A syntax error in the file is a configuration error, not a crash."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[dicom\nport = 1"), {})


def test_cli_prints_one_line_and_exits_2_on_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong value stops start-up with one stderr line naming the key and exit status 2."""
    monkeypatch.setenv("LISTENER_DICOM__PORT", "70000")

    code = main(["run"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "dicom.port" in err


def test_process_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """``python -m listener`` with an unknown fhir.version exits 2 and prints no traceback."""
    path = write(tmp_path, '[fhir]\nversion = "DSTU2"\n')

    result = subprocess.run(
        [sys.executable, "-m", "listener", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "fhir.version" in result.stderr


def test_example_file_documents_every_key_with_its_default() -> None:
    """config/listener.example.toml loads, and lists every setting at its default value."""
    text = EXAMPLE.read_text()
    loaded = load_settings(EXAMPLE, {})

    for key, default, doc in describe():
        assert f"# {doc}\n{key.rsplit('.', 1)[1]} = " in text, key
        assert setting_value(loaded.settings, key) == default, key


def test_readme_configuration_table_names_every_key() -> None:
    """Each setting appears in README.md's configuration table, so none goes undocumented."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text()

    assert [key for key, _default, _doc in describe() if f"`{key}`" not in readme] == []


def test_passwords_are_masked_in_urls() -> None:
    """mask_url hides the password and keeps the rest of the URL."""
    assert mask_url("amqp://user:s3cret@broker:5672/%2F") == "amqp://user:***@broker:5672/%2F"
    assert mask_url("amqp://broker/") == "amqp://broker/"


def test_dicomweb_beyond_loopback_requires_bearer_tokens() -> None:
    """DICOMweb serves patient data: a non-loopback host without token_file stops start-up."""
    exposed = {"LISTENER_DICOMWEB__ENABLED": "true", "LISTENER_DICOMWEB__HOST": "0.0.0.0"}

    with pytest.raises(ConfigError, match=r"dicomweb\.token_file"):
        load_settings(None, exposed)
    assert load_settings(None, {"LISTENER_DICOMWEB__ENABLED": "true"}).settings.dicomweb.enabled


def test_dicomweb_base_url_defaults_to_the_service_address_without_trailing_slash() -> None:
    """The Endpoint address is base_url without a trailing slash, or where the service listens."""
    default = load_settings(None, {"LISTENER_DICOMWEB__PORT": "8181"}).settings.dicomweb
    configured = load_settings(
        None, {"LISTENER_DICOMWEB__BASE_URL": "https://pacs.example.org/dicomweb/"}
    ).settings.dicomweb

    assert default.effective_base_url() == "http://127.0.0.1:8181/dicomweb"
    assert configured.effective_base_url() == "https://pacs.example.org/dicomweb"


def test_node_name_defaults_to_the_host_name() -> None:
    """storage.node_name, recorded with each stored instance, is the host name unless set."""
    default = load_settings(None, {}).settings.storage
    named = load_settings(None, {"LISTENER_STORAGE__NODE_NAME": "node-a"}).settings.storage

    assert default.effective_node_name() == socket.gethostname()
    assert named.effective_node_name() == "node-a"
