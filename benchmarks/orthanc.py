"""Orthanc as a benchmark receiver: where its binary is, its configuration, its stored instances.

Debian's ``orthanc`` package; we start our own ``Orthanc`` process (never the system service) with a
generated configuration that keeps Orthanc's defaults (SQLite index, ``SyncStorageArea``, no
plugins) and sets only its directories, ports and AE title. Orthanc's DICOM server is DCMTK, which
reads ``TCP_NODELAY`` from the environment like storescp (there is no configuration option for the
DICOM side; ``TcpNoDelay`` is the HTTP server's).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC_AE = "ORTHANC"
DEBIAN_BINARY = Path("/usr/sbin/Orthanc")
REST_TIMEOUT_SECONDS = 30.0


def find_binary() -> str | None:
    """The ``Orthanc`` executable on PATH or where Debian puts it; None when not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return str(DEBIAN_BINARY) if DEBIAN_BINARY.is_file() else None


def configuration(directory: Path, *, dicom_port: int, http_port: int) -> dict[str, Any]:
    """Orthanc's settings for one run: its own storage and index, localhost ports, any caller."""
    return {
        "Name": directory.name,
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
    }


def write_configuration(directory: Path, *, dicom_port: int, http_port: int) -> Path:
    """Create ``directory`` with its configuration file in it; the file's path."""
    directory.mkdir(parents=True)
    path = directory / "orthanc.json"
    settings = configuration(directory, dicom_port=dicom_port, http_port=http_port)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


def study_instance_count(http_port: int, study_uid: str) -> int:
    """How many instances of study ``study_uid`` Orthanc's index holds (REST ``/tools/find``)."""
    query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/tools/find",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REST_TIMEOUT_SECONDS) as response:
        found: list[str] = json.loads(response.read())
    return len(found)


def stored_file_count(directory: Path) -> int:
    """How many files Orthanc's storage area under ``directory`` holds."""
    return sum(1 for path in (directory / "storage").rglob("*") if path.is_file())
