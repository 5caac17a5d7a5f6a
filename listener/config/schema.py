"""Settings: a TOML file overridden by ``LISTENER_<SECTION>__<KEY>`` environment variables.

Every key is a field of a frozen dataclass below; its ``doc`` metadata is the one-line description
that ``config/listener.example.toml`` repeats. Loading validates everything up front, so a wrong
value stops start-up with one line that names the key instead of failing later in a thread.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from listener.config import checks
from listener.config import loader as config_loader
from listener.config.loader import Check, ConfigError, setting_value

__all__ = [
    "ConfigError",
    "LoadedSettings",
    "Settings",
    "describe",
    "load_settings",
    "setting_value",
]


def _setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare a setting with its default, its one-line documentation and an optional check."""
    if isinstance(default, list | dict):
        return field(
            default_factory=lambda: type(default)(default), metadata={"doc": doc, "check": check}
        )
    return field(default=default, metadata={"doc": doc, "check": check})


@dataclass(frozen=True)
class DicomTlsSettings:
    """DICOM over TLS (PS3.15 BCP 195): on when cert_file and key_file are set."""

    cert_file: str = _setting(
        "", "PEM certificate (chain) of our AE; with key_file turns TLS on.", checks.file
    )
    key_file: str = _setting("", "PEM private key of cert_file.", checks.file)
    ca_file: str = _setting(
        "", "PEM CA bundle; when set, clients must present a certificate it signed.", checks.file
    )


@dataclass(frozen=True)
class DicomSettings:
    """The DICOM network side: who we are, where we listen, whom we let in."""

    ae_title: str = _setting("DICOM-LISTENER", "Our AE title (called AE title).", checks.ae_title)
    host: str = _setting("0.0.0.0", "Address to bind the DICOM port to.")
    port: int = _setting(11112, "TCP port for DICOM associations.", checks.port)
    workers: int = _setting(
        1,
        "Processes serving the DICOM port on this host (one shared socket); 1 = no extra process.",
        checks.positive,
    )
    max_associations: int = _setting(
        16, "Maximum number of concurrent associations.", checks.positive
    )
    allowed_calling_ae_titles: list[str] = _setting(
        [], "Calling AE titles allowed to associate; empty allows any.", checks.ae_titles
    )
    require_called_ae_title: bool = _setting(
        True, "Reject associations whose called AE title is not ae_title."
    )
    peer_addresses: list[str] = _setting(
        [],
        'Per-AE address rules "AE@address" or "AE@network/prefix"; a listed AE only from these.',
        checks.peer_rules,
    )
    max_pdu_size: int = _setting(
        131072,
        "Largest PDU we accept (bytes, advertised to the sender); 0 means no limit.",
        checks.not_negative,
    )
    acse_timeout_seconds: float = _setting(
        15.0, "Time a new connection has to send its whole association request.", checks.positive
    )
    dimse_timeout_seconds: float = _setting(
        60.0,
        "Window in which a DIMSE message being received must bring min_transfer_bytes_per_second.",
        checks.positive,
    )
    idle_timeout_seconds: float = _setting(
        60.0, "An association silent for this long is aborted.", checks.positive
    )
    max_instance_mb: int = _setting(
        4096,
        "Larger instances are refused (0xA701) once past it; the rest is not written.",
        checks.positive,
    )
    max_other_dataset_mb: int = _setting(
        8,
        "Largest data set of a message other than C-STORE (MPPS, commitment); larger: refused.",
        checks.positive,
    )
    min_transfer_bytes_per_second: int = _setting(
        1024,
        "A DIMSE message slower than this over any dimse_timeout_seconds is aborted.",
        checks.not_negative,
    )
    max_pending_connections: int = _setting(
        64,
        "Connections still negotiating (TLS, association request) at once; more are closed.",
        checks.positive,
    )
    max_pending_connections_per_address: int = _setting(
        8,
        "Of those, at most this many from one source address; 0 means no per-address limit.",
        checks.not_negative,
    )
    max_associations_per_address: int = _setting(
        8,
        "Associations open at once from one source address (more are rejected); 0 = no limit.",
        checks.not_negative,
    )
    idle_timeout_before_dimse_seconds: float = _setting(
        10.0,
        "An association that has not yet sent a DIMSE message is aborted after this long silent.",
        checks.positive,
    )
    listen_backlog: int = _setting(
        256, "Connections the kernel queues for accepting (bursts of connects).", checks.positive
    )
    accept_unknown_sop_classes: bool = _setting(
        True,
        "Accept storage SOP classes pydicom does not know (private, newer); false refuses them.",
    )
    remote_aes: dict[str, str] = _setting(
        {},
        'Peers we connect to (commitment reports): AE title = "host:port"; TLS if tls is on.',
        checks.remote_aes,
    )
    tls: DicomTlsSettings = field(default_factory=DicomTlsSettings)


@dataclass(frozen=True)
class AggregatorSettings:
    """When a study counts as finished."""

    quiet_period_seconds: float = _setting(
        30.0, "A study is finished after this many seconds without a new instance.", checks.positive
    )
    mpps_grace_seconds: float = _setting(
        0.0,
        "After an MPPS COMPLETED listing missing instances, wait this long; 0 = the quiet period.",
        checks.not_negative,
    )
    max_study_age_seconds: float = _setting(
        0.0,
        "Publish a study this long after its first instance even if more keep coming; 0 = never.",
        checks.not_negative,
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
        "", "PEM CA bundle to verify the broker; empty uses the system's.", checks.file
    )
    cert_file: str = _setting(
        "", "PEM client certificate, for brokers that require one.", checks.file
    )
    key_file: str = _setting("", "PEM private key of cert_file.", checks.file)


@dataclass(frozen=True)
class AmqpSettings:
    """Where finished studies are published."""

    url: str = _setting(
        "amqp://guest:guest@localhost:5672/%2F",
        "Broker URL (amqp:// or amqps://).",
        checks.amqp_url,
    )
    exchange: str = _setting(
        "dicom-listener",
        "Topic exchange the ImagingStudy messages go to (declared durable).",
        checks.exchange_name,
    )
    routing_key: str = _setting("imagingstudy", "Routing key of every ImagingStudy message.")
    queue: str = _setting(
        "imagingstudy",
        "Durable queue bound to the exchange with the routing key; empty declares none.",
    )
    queue_type: Literal["classic", "quorum"] = _setting(
        "classic",
        "classic, or quorum (replicated; recommended when several nodes share the broker).",
    )
    reconnect_max_seconds: float = _setting(
        5.0,
        "Longest wait between reconnect attempts (backoff doubles up to it); less once it answers.",
        checks.positive,
    )
    password_file: str = _setting(
        "", "File holding the broker password; replaces the password in url.", checks.file
    )
    tls: AmqpTlsSettings = field(default_factory=AmqpTlsSettings)


@dataclass(frozen=True)
class OutputSettings:
    """Where finished studies go: RabbitMQ, or without a broker a directory or standard output."""

    kind: Literal["amqp", "directory", "stdout"] = _setting(
        "amqp",
        "amqp (the [amqp] broker), directory (files in output.directory) or stdout (JSON lines).",
    )
    directory: str = _setting(
        "", "With kind = directory: where each study version is written as <uid>.v<N>.json."
    )


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
        "", "Identifier system (URI) for PatientID when the header names no issuer.", checks.uri
    )
    timezone: str = _setting(
        "",
        "IANA zone for times lacking TimezoneOffsetFromUTC; empty gives the date only.",
        checks.zone,
    )
    endpoint_address: str = _setting(
        "",
        "DICOMweb (WADO-RS) base URL, no query or fragment (a trailing slash is dropped); "
        "adds a contained Endpoint to study and series.",
        checks.wado_base,
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
        checks.not_negative,
    )
    instance_retention_days: float = _setting(
        0.0,
        "Delete the files of studies published this many days ago; 0 keeps them.",
        checks.not_negative,
    )
    study_retention_days: float = _setting(
        30.0,
        "Forget the records of studies published this many days ago; 0 keeps them.",
        checks.not_negative,
    )
    on_changed_instance: Literal["new-version", "keep-first", "reject"] = _setting(
        "new-version",
        "A known SOP Instance UID re-sent with other content: new-version, keep-first or reject.",
    )
    database_url: str = _setting(
        "",
        "Empty = SQLite journal in data_dir; postgresql://user@host:port/db = PostgreSQL journal.",
        checks.database_url,
    )
    database_password_file: str = _setting(
        "",
        "File holding the database password; replaces the password in database_url.",
        checks.file,
    )
    node_name: str = _setting(
        "", "This listener's name, recorded with each instance it stores; empty = the host name."
    )

    def effective_node_name(self) -> str:
        """``node_name``, or this host's name when it is empty."""
        return self.node_name or socket.gethostname()


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics and health endpoints."""

    enabled: bool = _setting(True, "Serve /metrics, /healthz and /readyz over HTTP.")
    host: str = _setting("0.0.0.0", "Address to bind the metrics and health port to.")
    port: int = _setting(9464, "TCP port for /metrics, /healthz and /readyz.", checks.port)


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
class DicomwebTlsSettings:
    """HTTPS for the DICOMweb service: on when cert_file and key_file are set."""

    cert_file: str = _setting("", "PEM certificate (chain) of the DICOMweb service.", checks.file)
    key_file: str = _setting("", "PEM private key of cert_file.", checks.file)


@dataclass(frozen=True)
class DicomwebSettings:
    """Read-only DICOMweb (QIDO-RS, WADO-RS) over the instances we hold."""

    enabled: bool = _setting(False, "Serve DICOMweb; each ImagingStudy's Endpoint points at it.")
    host: str = _setting(
        "127.0.0.1", "Address to bind DICOMweb to; not loopback requires token_file."
    )
    port: int = _setting(8080, "TCP port for DICOMweb.", checks.port)
    base_url: str = _setting(
        "",
        "URL consumers reach the service at (the Endpoint address); empty: http(s)://host:port/dicomweb.",
        checks.http,
    )
    token_file: str = _setting(
        "", "File of bearer tokens, one per line; every request must carry one.", checks.file
    )
    tls: DicomwebTlsSettings = field(default_factory=DicomwebTlsSettings)

    def effective_base_url(self) -> str:
        """``base_url`` without a trailing slash, or the address the service listens on."""
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "https" if self.tls.cert_file else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/dicomweb"


@dataclass(frozen=True)
class Settings:
    """All settings, one section per boundary."""

    dicom: DicomSettings = field(default_factory=DicomSettings)
    aggregator: AggregatorSettings = field(default_factory=AggregatorSettings)
    amqp: AmqpSettings = field(default_factory=AmqpSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    dicomweb: DicomwebSettings = field(default_factory=DicomwebSettings)
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
    env = config_loader.environment_values(environ or {}, Settings)
    sources: dict[str, str] = {}
    settings = config_loader.build(Settings, file_values, env, prefix="", sources=sources)
    _check_combinations(settings)
    return LoadedSettings(settings=settings, sources=sources)


def _check_combinations(settings: Settings) -> None:
    """Rules that involve more than one key."""
    pairs = (
        ("dicom.tls", settings.dicom.tls),
        ("amqp.tls", settings.amqp.tls),
        ("dicomweb.tls", settings.dicomweb.tls),
    )
    for prefix, tls in pairs:
        if bool(tls.cert_file) != bool(tls.key_file):
            missing = "key_file" if tls.cert_file else "cert_file"
            raise ConfigError(
                f"{prefix}.{missing}: required together with the other of cert_file/key_file"
            )
    if settings.dicom.tls.ca_file and not settings.dicom.tls.cert_file:
        raise ConfigError(
            "dicom.tls.ca_file: client certificates need TLS on (cert_file, key_file)"
        )
    if settings.output.kind == "directory" and not settings.output.directory:
        raise ConfigError("output.directory: required when output.kind = directory")
    _check_dicomweb(settings.dicomweb)
    last_metrics_port = settings.metrics.port + settings.dicom.workers - 1  # worker i: port + i
    if settings.metrics.enabled and last_metrics_port > 65535:
        raise ConfigError(
            f"dicom.workers: worker {settings.dicom.workers - 1} would serve metrics on port"
            f" {last_metrics_port} (metrics.port + its index), above 65535"
        )
    amqp_tls = settings.amqp.tls
    if (amqp_tls.ca_file or amqp_tls.cert_file) and urlsplit(settings.amqp.url).scheme != "amqps":
        raise ConfigError("amqp.tls: set only with an amqps:// amqp.url")


def _check_dicomweb(dicomweb: DicomwebSettings) -> None:
    """Patient data over HTTP: without tokens, only to this host."""
    loopback = dicomweb.host in ("127.0.0.1", "::1", "localhost") or dicomweb.host.startswith(
        "127."
    )
    if dicomweb.enabled and not dicomweb.token_file and not loopback:
        raise ConfigError(
            f"dicomweb.token_file: required when dicomweb.host ({dicomweb.host}) is not loopback"
        )


def describe() -> list[tuple[str, Any, str]]:
    """``(key, default, doc)`` of every setting, in declaration order."""
    return config_loader.describe(Settings)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log or print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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
