"""Settings: the schema (one frozen dataclass per section), how it is loaded, checked and reported.

``schema`` defines every key; ``loader`` reads TOML and environment overrides into it; ``checks``
holds the per-value validators; ``report`` prints what ``check-config`` shows.
"""

from listener.config.loader import ConfigError, setting_value
from listener.config.schema import (
    AggregatorSettings,
    AmqpSettings,
    AmqpTlsSettings,
    DicomSettings,
    DicomTlsSettings,
    DicomwebSettings,
    DicomwebTlsSettings,
    FhirSettings,
    LoadedSettings,
    LoggingSettings,
    MetricsSettings,
    OutputSettings,
    Settings,
    StorageSettings,
    broker_url,
    describe,
    load_settings,
    mask_url,
)

__all__ = [
    "AggregatorSettings",
    "AmqpSettings",
    "AmqpTlsSettings",
    "ConfigError",
    "DicomSettings",
    "DicomTlsSettings",
    "DicomwebSettings",
    "DicomwebTlsSettings",
    "FhirSettings",
    "LoadedSettings",
    "LoggingSettings",
    "MetricsSettings",
    "OutputSettings",
    "Settings",
    "StorageSettings",
    "broker_url",
    "describe",
    "load_settings",
    "mask_url",
    "setting_value",
]
