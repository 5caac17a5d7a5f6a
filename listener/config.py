"""Settings: a TOML file overridden by ``LISTENER_<SECTION>__<KEY>`` environment variables.

Every key is a field of a frozen dataclass below; its ``doc`` metadata is the one-line description
that ``config/listener.example.toml`` repeats. Loading validates everything up front, so a wrong
value stops start-up with one line that names the key instead of failing later in a thread.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

ENV_PREFIX = "LISTENER_"

Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """A setting is missing, unknown or invalid; the message names the key."""


def _setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare a setting with its default, its one-line documentation and an optional check."""
    if isinstance(default, list | dict):
        return field(
            default_factory=lambda: type(default)(default), metadata={"doc": doc, "check": check}
        )
    return field(default=default, metadata={"doc": doc, "check": check})


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, got {value}"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _ae_title(value: str) -> str | None:
    if not 1 <= len(value.strip()) <= 16 or len(value) > 16:
        return f"must be 1 to 16 characters, got {value!r}"
    if "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        return f"must be printable ASCII without backslash, got {value!r}"
    return None


def _ae_titles(values: list[str]) -> str | None:
    return next((problem for problem in map(_ae_title, values) if problem), None)


def _amqp_url(value: str) -> str | None:
    scheme = urlsplit(value).scheme
    return (
        None
        if scheme in ("amqp", "amqps")
        else f"must be an amqp:// or amqps:// URL, got scheme {scheme!r}"
    )


def _file(value: str) -> str | None:
    if not value or Path(value).is_file():
        return None
    return f"must name a readable file, got {value!r}"


def _remote_aes(table: dict[str, str]) -> str | None:
    for title, address in table.items():
        host, _, port = address.rpartition(":")
        if _ae_title(title) or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            return f'must map AE titles to "host:port", got {title!r} = {address!r}'
    return None


def _peer_rules(values: list[str]) -> str | None:
    for value in values:
        title, _, address = value.partition("@")
        if _ae_title(title) or not address:
            return f'must be "AE@address" or "AE@network/prefix", got {value!r}'
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            return f"has an invalid address or network in {value!r}"
    return None


def _uri(value: str) -> str | None:
    if not value or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", value):
        return None
    return f"must be an absolute URI such as urn:oid:1.2.3 or https://h.example/mrn, got {value!r}"


def _http(value: str) -> str | None:
    parts = urlsplit(value)
    if not value or (parts.scheme in ("http", "https") and parts.netloc):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def _zone(value: str) -> str | None:
    if not value:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"must be an IANA time zone such as Europe/Berlin, got {value!r}"
    return None


def _exchange_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_.:-]{1,255}", value):
        return None
    return f"must be 1 to 255 letters, digits, '-', '_', '.' or ':', got {value!r}"


@dataclass(frozen=True)
class DicomTlsSettings:
    """DICOM over TLS (PS3.15 BCP 195): on when cert_file and key_file are set."""

    cert_file: str = _setting(
        "", "PEM certificate (chain) of our AE; with key_file turns TLS on.", _file
    )
    key_file: str = _setting("", "PEM private key of cert_file.", _file)
    ca_file: str = _setting(
        "", "PEM CA bundle; when set, clients must present a certificate it signed.", _file
    )


@dataclass(frozen=True)
class DicomSettings:
    """The DICOM network side: who we are, where we listen, whom we let in."""

    ae_title: str = _setting("DICOM-LISTENER", "Our AE title (called AE title).", _ae_title)
    host: str = _setting("0.0.0.0", "Address to bind the DICOM port to.")
    port: int = _setting(11112, "TCP port for DICOM associations.", _port)
    max_associations: int = _setting(16, "Maximum number of concurrent associations.", _positive)
    allowed_calling_ae_titles: list[str] = _setting(
        [], "Calling AE titles allowed to associate; empty allows any.", _ae_titles
    )
    require_called_ae_title: bool = _setting(
        True, "Reject associations whose called AE title is not ae_title."
    )
    peer_addresses: list[str] = _setting(
        [],
        'Per-AE address rules "AE@address" or "AE@network/prefix"; a listed AE only from these.',
        _peer_rules,
    )
    max_pdu_size: int = _setting(
        131072,
        "Largest PDU we accept (bytes, advertised to the sender); 0 means no limit.",
        _not_negative,
    )
    acse_timeout_seconds: float = _setting(
        15.0, "Time a new connection has to send its association request.", _positive
    )
    dimse_timeout_seconds: float = _setting(
        60.0, "Time a sender has to complete a DIMSE message it started.", _positive
    )
    idle_timeout_seconds: float = _setting(
        60.0, "An association silent for this long is aborted.", _positive
    )
    max_instance_mb: int = _setting(
        4096, "Larger instances are refused (0xA701) and their spool file removed.", _positive
    )
    max_pending_connections: int = _setting(
        64,
        "Connections still negotiating (TLS, association request) at once; more are closed.",
        _positive,
    )
    remote_aes: dict[str, str] = _setting(
        {},
        'Peers we connect to (storage commitment reports): AE title = "host:port".',
        _remote_aes,
    )
    tls: DicomTlsSettings = field(default_factory=DicomTlsSettings)


@dataclass(frozen=True)
class AggregatorSettings:
    """When a study counts as finished."""

    quiet_period_seconds: float = _setting(
        30.0, "A study is finished after this many seconds without a new instance.", _positive
    )
    mpps_grace_seconds: float = _setting(
        0.0,
        "After an MPPS COMPLETED listing missing instances, wait this long; 0 = the quiet period.",
        _not_negative,
    )
    max_study_age_seconds: float = _setting(
        0.0,
        "Publish a study this long after its first instance even if more keep coming; 0 = never.",
        _not_negative,
    )
    publish_registered: bool = _setting(
        False, "Publish a registered ImagingStudy when an MPPS starts (IN PROGRESS)."
    )
    cancel_discontinued: bool = _setting(
        True, "Publish a cancelled ImagingStudy for an MPPS DISCONTINUED before any instance."
    )


@dataclass(frozen=True)
class AmqpTlsSettings:
    """TLS for amqps:// URLs."""

    ca_file: str = _setting(
        "", "PEM CA bundle to verify the broker; empty uses the system's.", _file
    )
    cert_file: str = _setting("", "PEM client certificate, for brokers that require one.", _file)
    key_file: str = _setting("", "PEM private key of cert_file.", _file)


@dataclass(frozen=True)
class AmqpSettings:
    """Where finished studies are published."""

    url: str = _setting(
        "amqp://guest:guest@localhost:5672/%2F", "Broker URL (amqp:// or amqps://).", _amqp_url
    )
    exchange: str = _setting(
        "dicom-listener",
        "Topic exchange the ImagingStudy messages go to (declared durable).",
        _exchange_name,
    )
    routing_key: str = _setting("imagingstudy", "Routing key of every ImagingStudy message.")
    queue: str = _setting(
        "imagingstudy",
        "Durable queue bound to the exchange with the routing key; empty declares none.",
    )
    reconnect_max_seconds: float = _setting(
        30.0,
        "Longest wait between reconnect attempts (the backoff doubles up to this).",
        _positive,
    )
    password_file: str = _setting(
        "", "File holding the broker password; replaces the password in url.", _file
    )
    tls: AmqpTlsSettings = field(default_factory=AmqpTlsSettings)


@dataclass(frozen=True)
class FhirSettings:
    """The resource we emit."""

    version: Literal["R4", "R5"] = _setting(
        "R4", "FHIR version of the ImagingStudy: R4 (4.0.1) or R5 (5.0.0)."
    )
    subject: Literal["identifier", "contained"] = _setting(
        "identifier", "Patient by identifier, or contained with name, birth date and gender."
    )
    patient_identifier_system: str = _setting(
        "", "Identifier system (URI) for PatientID when the header names no issuer.", _uri
    )
    timezone: str = _setting(
        "", "IANA zone for times lacking TimezoneOffsetFromUTC; empty gives the date only.", _zone
    )
    endpoint_address: str = _setting(
        "", "DICOMweb (WADO-RS) base URL; adds a contained Endpoint to study and series.", _http
    )
    endpoint_reference: str = _setting(
        "", "Reference to an existing Endpoint (e.g. Endpoint/pacs), used instead of contained."
    )


@dataclass(frozen=True)
class StorageSettings:
    """Where the journal and received instances live."""

    data_dir: Path = _setting(Path("./data"), "Directory for the journal and received instances.")
    keep_instances: bool = _setting(
        True, "Keep received files under data_dir/instances; false deletes each once journaled."
    )
    min_free_mb: int = _setting(
        1024,
        "Refuse instances (0xA700 Out of Resources) when less disk than this is free.",
        _not_negative,
    )
    instance_retention_days: float = _setting(
        0.0,
        "Delete the files of studies published this many days ago; 0 keeps them.",
        _not_negative,
    )
    study_retention_days: float = _setting(
        30.0,
        "Forget the records of studies published this many days ago; 0 keeps them.",
        _not_negative,
    )


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics and health endpoints."""

    enabled: bool = _setting(True, "Serve /metrics, /healthz and /readyz over HTTP.")
    host: str = _setting("0.0.0.0", "Address to bind the metrics and health port to.")
    port: int = _setting(9464, "TCP port for /metrics, /healthz and /readyz.", _port)


@dataclass(frozen=True)
class LoggingSettings:
    """What the listener says about itself."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _setting(
        "INFO", "Lowest level logged: DEBUG, INFO, WARNING or ERROR."
    )
    format: Literal["auto", "json", "console"] = _setting(
        "auto", "auto = console on a terminal, JSON lines otherwise."
    )
    include_phi: bool = _setting(
        False, "Allow patient names, IDs and birth dates in DEBUG lines (never at INFO and up)."
    )


@dataclass(frozen=True)
class Settings:
    """All settings, one section per boundary."""

    dicom: DicomSettings = field(default_factory=DicomSettings)
    aggregator: AggregatorSettings = field(default_factory=AggregatorSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where each key's value came from (``default``, ``file`` or ``env``)."""

    settings: Settings
    sources: dict[str, str]


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedSettings:
    """Read ``path`` (optional), apply environment overrides and validate every key."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    env = _environment_values(environ or {})
    sources: dict[str, str] = {}
    settings = _build(Settings, file_values, env, prefix="", sources=sources)
    _check_combinations(settings)
    return LoadedSettings(settings=settings, sources=sources)


def _check_combinations(settings: Settings) -> None:
    """Rules that involve more than one key."""
    for prefix, tls in (("dicom.tls", settings.dicom.tls), ("amqp.tls", settings.amqp.tls)):
        if bool(tls.cert_file) != bool(tls.key_file):
            missing = "key_file" if tls.cert_file else "cert_file"
            raise ConfigError(
                f"{prefix}.{missing}: required together with the other of cert_file/key_file"
            )
    if settings.dicom.tls.ca_file and not settings.dicom.tls.cert_file:
        raise ConfigError(
            "dicom.tls.ca_file: client certificates need TLS on (cert_file, key_file)"
        )
    amqp_tls = settings.amqp.tls
    if (amqp_tls.ca_file or amqp_tls.cert_file) and urlsplit(settings.amqp.url).scheme != "amqps":
        raise ConfigError("amqp.tls: set only with an amqps:// amqp.url")


def _environment_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Map ``LISTENER_DICOM__PORT`` to ``dicom.port``."""
    values = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            values[key] = value
    _reject_unknown(set(values), _known_keys(Settings, ""), origin="environment variable")
    return values


def _known_keys(cls: type[Any], prefix: str) -> set[str]:
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys |= _known_keys(typing.cast(type[Any], hint), f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _reject_unknown(keys: set[str], known: set[str], *, origin: str) -> None:
    for key in sorted(keys - known):
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        shown = env_name if origin == "environment variable" else key
        raise ConfigError(f"{shown}: unknown {origin} key")


def _build(
    cls: type[Any], table: Any, env: dict[str, str], *, prefix: str, sources: dict[str, str]
) -> Any:
    """Build dataclass ``cls`` from a TOML table and env overrides, noting each value's source."""
    section = prefix.rstrip(".") or "top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: must be a table")
    hints = typing.get_type_hints(cls)
    _reject_unknown(
        {f"{prefix}{k}" for k in table}, {f"{prefix}{k}" for k in hints}, origin="config"
    )
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        if dataclasses.is_dataclass(hint):
            sub = typing.cast(type[Any], hint)
            values[item.name] = _build(
                sub, table.get(item.name, {}), env, prefix=f"{key}.", sources=sources
            )
            continue
        if key in env:
            values[item.name] = _coerce(key, hint, env[key], from_env=True)
            sources[key] = "env"
        elif item.name in table:
            values[item.name] = _coerce(key, hint, table[item.name], from_env=False)
            sources[key] = "file"
        else:
            sources[key] = "default"
            continue
        check: Check | None = item.metadata.get("check")
        problem = check(values[item.name]) if check else None
        if problem:
            raise ConfigError(f"{key}: {problem}")
    return cls(**values)


def _coerce(key: str, hint: Any, raw: Any, *, from_env: bool) -> Any:
    """Turn a TOML value or an environment string into ``hint``, or raise naming ``key``."""
    if typing.get_origin(hint) is Literal:
        return _choice(key, typing.get_args(hint), raw)
    if typing.get_origin(hint) is list:
        return _string_list(key, raw, from_env=from_env)
    if typing.get_origin(hint) is dict:
        return _string_table(key, raw, from_env=from_env)
    if hint is bool:
        return _boolean(key, raw, from_env=from_env)
    if hint is int or hint is float:
        return _number(key, hint, raw)
    if not isinstance(raw, str) or (hint is Path and not raw):
        raise ConfigError(f"{key}: must be a {'non-empty path' if hint is Path else 'string'}")
    return Path(raw) if hint is Path else raw


def _choice(key: str, choices: tuple[Any, ...], raw: Any) -> Any:
    if raw not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {raw!r}")
    return raw


def _string_list(key: str, raw: Any, *, from_env: bool) -> list[str]:
    if from_env:
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f'{key}: must be a JSON list, e.g. \'["CT1", "MR2"]\'') from None
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{key}: must be a list of strings")
    return list(raw)


def _string_table(key: str, raw: Any, *, from_env: bool) -> dict[str, str]:
    if from_env:
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(
                f'{key}: must be a JSON object, e.g. \'{{"CT1": "10.0.0.5:104"}}\''
            ) from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{key}: must be a table of strings")
    return {str(k): v for k, v in raw.items()}


def _boolean(key: str, raw: Any, *, from_env: bool) -> bool:
    if (
        from_env
        and isinstance(raw, str)
        and raw.lower() in ("true", "1", "yes", "false", "0", "no")
    ):
        return raw.lower() in ("true", "1", "yes")
    if isinstance(raw, bool):
        return raw
    raise ConfigError(f"{key}: must be true or false, got {raw!r}")


def _number(key: str, hint: type[int] | type[float], raw: Any) -> int | float:
    kind = "an integer" if hint is int else "a number"
    if isinstance(raw, bool):
        raise ConfigError(f"{key}: must be {kind}, got {raw!r}")
    if isinstance(raw, str):
        try:
            raw = hint(raw)
        except ValueError:
            raise ConfigError(f"{key}: must be {kind}, got {raw!r}") from None
    if hint is int and isinstance(raw, int):
        return raw
    if hint is float and isinstance(raw, int | float):
        return float(raw)
    raise ConfigError(f"{key}: must be {kind}, got {raw!r}")


def describe(cls: type[Any] = Settings, prefix: str = "") -> list[tuple[str, Any, str]]:
    """List ``(key, default, doc)`` for every setting, in declaration order."""
    rows: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            rows += describe(typing.cast(type[Any], hint), f"{prefix}{item.name}.")
        else:
            factory = item.default_factory
            default = item.default if factory is dataclasses.MISSING else factory()
            rows.append((f"{prefix}{item.name}", default, item.metadata["doc"]))
    return rows


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log or print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def setting_value(settings: Settings, key: str) -> Any:
    """The value of a dotted key such as ``dicom.tls.cert_file``."""
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def broker_url(amqp: AmqpSettings) -> str:
    """``amqp.url`` with the password from ``amqp.password_file`` when one is configured."""
    if not amqp.password_file:
        return amqp.url
    password = Path(amqp.password_file).read_text(encoding="utf-8").strip()
    parts = urlsplit(amqp.url)
    user = parts.username or "guest"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return parts._replace(netloc=netloc).geturl()
