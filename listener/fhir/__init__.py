"""Pure mapping from a finished study to a FHIR ImagingStudy, plus its deterministic encoding."""

from __future__ import annotations

import json

from listener.fhir.common import JsonObject
from listener.fhir.imaging_study import FhirOptions, MappedStudy, imaging_study

FHIR_RELEASES = {"R4": "4.0.1", "R5": "5.0.0"}

__all__ = ["FHIR_RELEASES", "FhirOptions", "MappedStudy", "encode", "imaging_study"]


def encode(resource: JsonObject) -> bytes:
    """Compact UTF-8 JSON; the same resource always gives the same bytes."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
