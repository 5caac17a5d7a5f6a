"""StudyState -> FHIR ImagingStudy (R4 4.0.1 or R5 5.0.0) as a JSON-ready dict, plus warnings.

One builder serves both releases; where they differ (Coding vs CodeableConcept, CodeableReference,
``procedureCode``/``procedure``, ``reasonCode``/``reason``, R4-only ``interpreter``) the release
decides. docs/mapping.md lists every element, its DICOM source and these differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from listener.fhir.common import (
    DATA_ABSENT_REASON,
    DICOM_UID_SYSTEM,
    JsonObject,
    accession_identifier,
    codeable_concept,
    compact,
    identifier,
    oid_urn,
    person,
    typed_identifier_reference,
)
from listener.fhir.datetime import fhir_date, offset_problem, started
from listener.fhir.names import human_names
from listener.fhir.series import modality, modality_code, series_element
from listener.fhir.terminology import is_acquisition_modality
from listener.model import Code, Issuer, Request, StudyState

ENDPOINT_CONNECTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
_GENDER = {"M": "male", "F": "female", "O": "other"}
_LO_MAX = 64


@dataclass(frozen=True, slots=True)
class FhirOptions:
    """How the resource is shaped; built from the ``[fhir]`` settings."""

    version: str = "R4"
    subject: str = "identifier"
    patient_identifier_system: str = ""
    timezone: str = ""
    endpoint_address: str = ""
    endpoint_reference: str = ""


@dataclass(frozen=True, slots=True)
class MappedStudy:
    """The resource and what was cleaned or dropped on the way (no patient data in warnings)."""

    resource: JsonObject
    warnings: tuple[str, ...]


class _Study:
    """Study-level values: the most recently received non-empty one, noting disagreements."""

    def __init__(self, study: StudyState) -> None:
        self._records = study.latest_first + study.headers
        self._canonical = study.instances + study.headers  # list values: union in this order
        self.warnings: list[str] = []

    def text(self, name: str) -> str:
        values = [value for record in self._records if (value := getattr(record, name))]
        if len(set(values)) > 1:
            self.warnings.append(
                f"study attribute {name} differs between instances; most recently received used"
            )
        return values[0] if values else ""

    def first(self, name: str) -> Any:
        return next((v for record in self._records if (v := getattr(record, name))), None)

    def union(self, name: str) -> list[Any]:
        return list(dict.fromkeys(v for record in self._canonical for v in getattr(record, name)))


def imaging_study(
    study: StudyState, *, version: int, options: FhirOptions, status: str = "available"
) -> MappedStudy:
    """Map a study to an ImagingStudy of ``options.version``; ``version`` is ``meta.versionId``.

    ``status`` is ``available`` for a study with instances, ``registered`` or ``cancelled`` from
    the modality's workflow (then the study may have no series; its attributes come from
    ``study.headers``).
    """
    r5 = options.version == "R5"
    attrs = _Study(study)
    contained: list[JsonObject] = []
    subject = _subject(attrs, options, contained)
    endpoints = _endpoints(options, contained, r5=r5)
    offset = attrs.text("timezone_offset")
    problem = offset_problem(offset) if offset else None
    if problem:
        attrs.warnings.append(f"TimezoneOffsetFromUTC {problem}; ignored")
    zone = options.timezone
    date, time = attrs.text("study_date"), attrs.text("study_time")
    accession, accession_issuer = attrs.text("accession_number"), attrs.first("accession_issuer")
    codes = attrs.union("procedure_codes") or _requested_codes(attrs)
    reasons = [codeable_concept(c) for c in attrs.union("reason_codes")]
    reasons += [{"text": text} for text in attrs.union("reasons")]
    modalities = _study_modalities(study, r5=r5)
    resource = {
        "resourceType": "ImagingStudy",
        "id": study.study_uid,
        "meta": {"versionId": str(version)},
        "contained": contained,
        "identifier": _identifiers(
            study.study_uid, attrs, accession if not r5 else "", accession_issuer
        ),
        "status": status,
        "modality": [modality(code, r5=r5) for code in modalities],
        "subject": subject,
        "encounter": _encounter(attrs.text("admission_id"), attrs.first("admission_issuer")),
        "started": started(date, time, offset, zone=zone, warnings=attrs.warnings),
        "basedOn": _based_on(attrs, accession, accession_issuer),
        "referrer": person(
            attrs.text("referring_physician"), attrs.first("referring_physician_ids") or ()
        ),
        "interpreter": None if r5 else _people(attrs.union("reading_physicians")),
        "endpoint": endpoints,
        "numberOfSeries": len(study.series),
        "numberOfInstances": study.number_of_instances,
        "procedure" if r5 else "procedureCode": [_concept(codeable_concept(c), r5) for c in codes],
        "location": _location(
            attrs.text("performed_location"),
            attrs.text("department_name"),
            attrs.text("institution_name"),
        ),
        "reason" if r5 else "reasonCode": [_concept(reason, r5) for reason in reasons],
        "note": [{"text": text} for text in _notes(attrs)],
        "description": attrs.text("study_description"),
        "series": [
            series_element(
                s, offset=offset, zone=zone, endpoints=endpoints, warnings=attrs.warnings, r5=r5
            )
            for s in study.series
        ],
    }
    return MappedStudy(compact(resource), tuple(dict.fromkeys(attrs.warnings)))


def _study_modalities(study: StudyState, *, r5: bool) -> list[str]:
    """The distinct series modalities; R4 lists only acquisition modalities (CID 29).

    R4 defines the study ``modality`` as the acquisition modalities of its series; R5 as all
    of them. A study without series (MPPS only) takes the modalities its headers name.
    """
    found = {modality_code(series.latest_first[0]) for series in study.series} or {
        modality_code(header) for header in study.headers if header.modality
    }
    return sorted(code for code in found if code and (r5 or is_acquisition_modality(code)))


def _requested_codes(attrs: _Study) -> list[Code]:
    """The requested procedures' codes, top level and of each request item."""
    requests: list[Request] = attrs.union("requests")
    codes = attrs.union("requested_procedure_codes") + [c for r in requests for c in r.codes]
    return list(dict.fromkeys(codes))


def _concept(concept: JsonObject, r5: bool) -> JsonObject:
    """R5 wraps a CodeableConcept in a CodeableReference."""
    return {"concept": concept} if r5 else concept


def _identifiers(study_uid: str, attrs: _Study, accession: str, issuer: Any) -> list[JsonObject]:
    """Study UID, accession number (R4 only: R5 maps it to ``basedOn`` alone) and Study ID."""
    identifiers: list[JsonObject] = [{"system": DICOM_UID_SYSTEM, "value": oid_urn(study_uid)}]
    if accession:
        identifiers.append(accession_identifier(accession, issuer))
    study_id = attrs.text("study_id")
    if study_id:
        identifiers.append(
            {"use": "secondary", "type": {"text": "DICOM Study ID"}, "value": study_id}
        )
    return identifiers


def _subject(attrs: _Study, options: FhirOptions, contained: list[JsonObject]) -> JsonObject:
    """The Patient: by identifier, or as a contained resource; explicitly unknown without an ID."""
    patient_id = attrs.text("patient_id")
    if len(patient_id) > _LO_MAX:
        attrs.warnings.append("PatientID longer than 64 characters; kept as sent")
    patient_identifier = (
        identifier(
            patient_id,
            issuer=attrs.first("patient_id_issuer"),
            system=options.patient_identifier_system,
        )
        if patient_id
        else None
    )
    if options.subject == "contained":
        birth_date = attrs.text("patient_birth_date")
        if birth_date and fhir_date(birth_date) is None:
            attrs.warnings.append("PatientBirthDate malformed; omitted")
        contained.append(
            compact(
                {
                    "resourceType": "Patient",
                    "id": "patient",
                    "identifier": [patient_identifier] if patient_identifier else [],
                    "name": human_names(attrs.text("patient_name")),
                    "gender": _GENDER.get(attrs.text("patient_sex").upper(), "unknown"),
                    "birthDate": fhir_date(birth_date),
                }
            )
        )
        return {"reference": "#patient", "type": "Patient"}
    if patient_identifier is None:
        return {
            "extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}],
            "type": "Patient",
            "display": "Unknown patient (no PatientID in the DICOM header)",
        }
    return {"type": "Patient", "identifier": patient_identifier}


def _endpoints(options: FhirOptions, contained: list[JsonObject], *, r5: bool) -> list[JsonObject]:
    """The DICOMweb (WADO-RS) endpoint: a configured reference, or a contained Endpoint."""
    if options.endpoint_reference:
        return [{"reference": options.endpoint_reference, "type": "Endpoint"}]
    if not options.endpoint_address:
        return []
    connection = {"system": ENDPOINT_CONNECTION_SYSTEM, "code": "dicom-wado-rs"}
    endpoint: JsonObject = {"resourceType": "Endpoint", "id": "dicomweb", "status": "active"}
    if r5:
        endpoint["connectionType"] = [{"coding": [connection]}]
    else:
        endpoint["connectionType"] = connection
        endpoint["payloadType"] = [{"text": "DICOM"}]
    endpoint["address"] = options.endpoint_address.rstrip("/")
    contained.append(endpoint)
    return [{"reference": "#dicomweb", "type": "Endpoint"}]


def _encounter(admission_id: str, issuer: Issuer | None) -> JsonObject | None:
    """The Encounter by AdmissionID, its IssuerOfAdmissionIDSequence as the system."""
    if not admission_id:
        return None
    return typed_identifier_reference("Encounter", identifier(admission_id, issuer=issuer))


def _based_on(attrs: _Study, accession: str, issuer: Issuer | None) -> list[JsonObject]:
    """ServiceRequests: one per distinct accession number, then one per Requested Procedure ID.

    The accessions are the top-level one and those of every RequestAttributesSequence item
    (grouped procedures). R5 maps RequestedProcedureCodeSequence to ``basedOn``: a request's
    code meanings are its reference's display.
    """
    requests: list[Request] = attrs.union("requests")
    top = Request(accession, issuer, codes=tuple(attrs.union("requested_procedure_codes")))
    accessions: dict[str, Request] = {}
    for request in (top, *requests):
        if not request.accession:
            continue
        known = accessions.get(request.accession, Request(request.accession))
        accessions[request.accession] = Request(
            request.accession, known.issuer or request.issuer, codes=known.codes + request.codes
        )
    references = [
        _service_request(accession_identifier(r.accession, r.issuer), r.codes)
        for r in accessions.values()
    ]
    for procedure_id in attrs.union("requested_procedure_ids"):
        codes = tuple(c for r in requests if r.procedure_id == procedure_id for c in r.codes)
        procedure = {"type": {"text": "Requested Procedure ID"}, "value": procedure_id}
        references.append(_service_request(procedure, codes))
    return references


def _service_request(value: JsonObject, codes: tuple[Code, ...]) -> JsonObject:
    """A ServiceRequest by identifier, displayed as its requested procedure's code meanings."""
    reference = typed_identifier_reference("ServiceRequest", value)
    display = "; ".join(dict.fromkeys(code.meaning for code in codes if code.meaning))
    return {**reference, "display": display} if display else reference


def _people(names: list[str]) -> list[JsonObject]:
    return [p for pn in names if (p := person(pn))]


def _location(*parts: str) -> JsonObject | None:
    """A Location by display: PerformedLocation, department, institution (the present ones)."""
    text = ", ".join(part for part in parts if part)
    return {"type": "Location", "display": text} if text else None


def _notes(attrs: _Study) -> list[str]:
    return list(
        dict.fromkeys(
            text
            for text in (attrs.text("study_comments"), attrs.text("requested_procedure_comments"))
            if text
        )
    )
