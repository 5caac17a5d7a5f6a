"""StudyState -> FHIR R4 (4.0.1) ImagingStudy, as a plain JSON-ready dict."""

from __future__ import annotations

from listener.fhir.common import (
    DCM_SYSTEM,
    RFC3986_SYSTEM,
    JsonObject,
    compact,
    first_non_empty,
    modality_code,
    oid_urn,
    patient_reference,
    study_identifiers,
    unsigned,
)
from listener.fhir.datetime import fhir_datetime
from listener.model import SeriesState, StudyState


def _modality_coding(code: str) -> JsonObject:
    return {"system": DCM_SYSTEM, "code": code}


def _series(series: SeriesState, offset: str) -> JsonObject:
    first = series.instances[0]
    return compact(
        {
            "uid": series.series_uid,
            "number": unsigned(first.series_number),
            "modality": _modality_coding(modality_code(first)),
            "description": next(
                (r.series_description for r in series.instances if r.series_description), None
            ),
            "numberOfInstances": len(series.instances),
            "started": fhir_datetime(first.series_date, first.series_time, offset),
            "instance": [
                compact(
                    {
                        "uid": record.sop_instance_uid,
                        "sopClass": {
                            "system": RFC3986_SYSTEM,
                            "code": oid_urn(record.sop_class_uid),
                        },
                        "number": unsigned(record.instance_number),
                    }
                )
                for record in series.instances
            ],
        }
    )


def imaging_study(study: StudyState, *, version: int) -> JsonObject:
    """Map a finished study to an R4 ImagingStudy; ``version`` becomes ``meta.versionId``."""
    offset = first_non_empty(study, lambda r: r.timezone_offset)
    modalities = sorted({modality_code(series.instances[0]) for series in study.series})
    return compact(
        {
            "resourceType": "ImagingStudy",
            "id": study.study_uid,
            "meta": {"versionId": str(version)},
            "identifier": study_identifiers(study),
            "status": "available",
            "modality": [_modality_coding(code) for code in modalities],
            "subject": patient_reference(study),
            "started": fhir_datetime(
                first_non_empty(study, lambda r: r.study_date),
                first_non_empty(study, lambda r: r.study_time),
                offset,
            ),
            "numberOfSeries": len(study.series),
            "numberOfInstances": study.number_of_instances,
            "description": first_non_empty(study, lambda r: r.study_description),
            "series": [_series(series, offset) for series in study.series],
        }
    )
