"""Pure mapping from a finished study to a FHIR ImagingStudy, plus its deterministic encoding."""

from __future__ import annotations

import json

from listener.fhir import r4
from listener.fhir.common import JsonObject
from listener.model import StudyState

FHIR_RELEASES = {"R4": "4.0.1"}


def imaging_study(study: StudyState, *, version: int, fhir_version: str) -> JsonObject:
    """Map ``study`` to an ImagingStudy of ``fhir_version`` (``R4``) with ``meta.versionId``."""
    if fhir_version == "R4":
        return r4.imaging_study(study, version=version)
    raise ValueError(f"unsupported FHIR version {fhir_version!r}")


def encode(resource: JsonObject) -> bytes:
    """Compact UTF-8 JSON; the same resource always gives the same bytes."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
