"""Pieces shared by the FHIR mappings: systems, codings and study-level attribute resolution."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from listener.model import InstanceRecord, StudyState

DICOM_UID_SYSTEM = "urn:dicom:uid"
RFC3986_SYSTEM = "urn:ietf:rfc:3986"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

JsonObject = dict[str, Any]


def oid_urn(uid: str) -> str:
    """A DICOM UID as the URI FHIR uses for it."""
    return f"urn:oid:{uid}"


def first_non_empty(study: StudyState, read: Callable[[InstanceRecord], str]) -> str:
    """The first non-empty value of a study-level attribute, in canonical instance order."""
    return next((value for record in study.instances if (value := read(record))), "")


def unsigned(value: int | None) -> int | None:
    """``value`` if it fits FHIR's unsignedInt, else None."""
    return value if value is not None and 0 <= value <= 2_147_483_647 else None


def compact(resource: JsonObject) -> JsonObject:
    """Drop keys whose value is None, empty text or an empty list (FHIR forbids empty elements)."""
    return {key: value for key, value in resource.items() if value not in (None, "", [], {})}


def study_identifiers(study: StudyState) -> list[JsonObject]:
    """The StudyInstanceUID and, when present, the accession number (typed ACSN)."""
    identifiers: list[JsonObject] = [
        {"system": DICOM_UID_SYSTEM, "value": oid_urn(study.study_uid)}
    ]
    accession = first_non_empty(study, lambda r: r.accession_number)
    if accession:
        identifiers.append(
            {
                "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "ACSN"}]},
                "value": accession,
            }
        )
    return identifiers


def patient_reference(study: StudyState) -> JsonObject:
    """A Patient reference by PatientID; a valid, explicitly unknown reference without one."""
    patient_id = first_non_empty(study, lambda r: r.patient_id)
    if not patient_id:
        return {
            "type": "Patient",
            "display": "Unknown patient (no PatientID in the DICOM header)",
            "extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}],
        }
    identifier: JsonObject = {"value": patient_id}
    issuer = first_non_empty(study, lambda r: r.issuer_of_patient_id)
    if issuer:
        identifier["assigner"] = {"display": issuer}
    return {"type": "Patient", "identifier": identifier}


def modality_code(record: InstanceRecord) -> str:
    """The series modality, or OT (Other) when the header has none; FHIR requires one."""
    return record.modality.split("\\")[0].strip() or "OT"
