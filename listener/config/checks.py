"""Value checks for settings: each returns None when the value is fine, else the problem."""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from pathlib import Path
from urllib.parse import SplitResult, urlsplit


def port(value: int) -> str | None:
    """A TCP port number."""
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, got {value}"


def positive(value: float) -> str | None:
    """Greater than zero."""
    return None if value > 0 else f"must be greater than 0, got {value}"


def not_negative(value: float) -> str | None:
    """Zero or more."""
    return None if value >= 0 else f"must be 0 or more, got {value}"


def ae_title(value: str) -> str | None:
    """A DICOM AE title: 1 to 16 printable ASCII characters, no backslash."""
    if not 1 <= len(value.strip()) <= 16 or len(value) > 16:
        return f"must be 1 to 16 characters, got {value!r}"
    if "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        return f"must be printable ASCII without backslash, got {value!r}"
    return None


def ae_titles(values: list[str]) -> str | None:
    """A list of AE titles."""
    return next((problem for problem in map(ae_title, values) if problem), None)


def amqp_url(value: str) -> str | None:
    """An amqp:// or amqps:// URL with a valid port, if it names one."""
    parts = urlsplit(value)
    if parts.scheme not in ("amqp", "amqps"):
        return f"must be an amqp:// or amqps:// URL, got scheme {parts.scheme!r}"
    if problem := _url_port_problem(parts):
        return problem
    if parts.port == 0:
        return "has an invalid port '0': must be a number between 1 and 65535"
    return None


def database_url(value: str) -> str | None:
    """Empty, or a postgresql:// (or postgres://) URL with a valid port, if it names one."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        return f"must be empty or a postgresql:// URL, got scheme {parts.scheme!r}"
    return _url_port_problem(parts)


def _url_port_problem(parts: SplitResult) -> str | None:
    """Why a URL's port is not a number from 0 to 65535 (urllib checks it when it is read)."""
    try:
        parts.port  # noqa: B018 -- reading it is the check
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        return f"has an invalid port {port!r}: must be a number between 1 and 65535"
    return None


def file(value: str) -> str | None:
    """Empty, or a readable file."""
    if not value or Path(value).is_file():
        return None
    return f"must name a readable file, got {value!r}"


def remote_aes(table: dict[str, str]) -> str | None:
    """AE titles mapped to "host:port"."""
    for title, address in table.items():
        host, _, port = address.rpartition(":")
        if ae_title(title) or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            return f'must map AE titles to "host:port", got {title!r} = {address!r}'
    return None


def peer_rules(values: list[str]) -> str | None:
    """Rules of the form ``AE@address`` or ``AE@network/prefix``."""
    for value in values:
        title, _, address = value.partition("@")
        if ae_title(title) or not address:
            return f'must be "AE@address" or "AE@network/prefix", got {value!r}'
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            return f"has an invalid address or network in {value!r}"
    return None


def uri(value: str) -> str | None:
    """Empty, or an absolute URI."""
    if not value or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", value):
        return None
    return f"must be an absolute URI such as urn:oid:1.2.3 or https://h.example/mrn, got {value!r}"


def http(value: str) -> str | None:
    """Empty, or a web URL (http:// or https://)."""
    parts = urlsplit(value)
    if not value or (parts.scheme in ("http", "https") and parts.netloc):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def wado_base(value: str) -> str | None:
    """Empty, or a DICOMweb base URL fit for an Endpoint address: no query or fragment.

    A trailing slash is accepted; the mapping drops it (the address is scheme, authority, path).
    """
    problem = http(value)
    if problem or not value:
        return problem
    parts = urlsplit(value)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return f"must be a base URL without query or fragment, got {value!r}"
    return None


def zone(value: str) -> str | None:
    """Empty, or an IANA time zone name."""
    if not value:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"must be an IANA time zone such as Europe/Berlin, got {value!r}"
    return None


def exchange_name(value: str) -> str | None:
    """An AMQP exchange name."""
    if re.fullmatch(r"[A-Za-z0-9_.:-]{1,255}", value):
        return None
    return f"must be 1 to 255 letters, digits, '-', '_', '.' or ':', got {value!r}"
