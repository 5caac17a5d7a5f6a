"""The series and instance elements of an ImagingStudy, for R4 and R5."""

from __future__ import annotations

from pydicom.uid import UID

from listener.fhir.common import (
    DCM_SYSTEM,
    DICOM_UID_SYSTEM,
    PARTICIPATION_SYSTEM,
    RFC3986_SYSTEM,
    JsonObject,
    compact,
    fhir_code,
    oid_urn,
    practitioner,
    typed_identifier_reference,
    unsigned,
)
from listener.fhir.datetime import started
from listener.fhir.names import display_name
from listener.fhir.terminology import body_site_coding, laterality_coding, modality_display
from listener.model import InstanceRecord, SeriesState


def series_element(
    series: SeriesState,
    *,
    offset: str,
    zone: str,
    endpoints: list[JsonObject],
    warnings: list[str],
    r5: bool,
) -> JsonObject:
    """One ``ImagingStudy.series``; what is cleaned or dropped is appended to ``warnings``.

    Series-level values come from the most recently received instance (text: the most recent
    non-empty one); instances are listed in canonical order.
    """
    records = series.instances
    first = series.latest_first[0]

    def pick(name: str) -> str:
        return next((value for r in series.latest_first if (value := getattr(r, name))), "")

    return compact(
        {
            "uid": series.series_uid,
            "number": unsigned(first.series_number),
            "modality": modality(modality_code(first), r5=r5),
            "description": pick("series_description"),
            "numberOfInstances": len(records),
            "endpoint": endpoints,
            "bodySite": _body_site(pick("body_part_examined"), warnings, r5=r5),
            "laterality": _laterality(pick("laterality") or pick("image_laterality"), r5=r5),
            "specimen": _specimens(records),
            "started": started(
                first.series_date,
                first.series_time,
                offset,
                zone=zone,
                warnings=warnings,
                name="SeriesDate",
            ),
            "performer": _performers(records),
            "instance": [_instance(record) for record in records],
        }
    )


def modality_code(record: InstanceRecord) -> str:
    """The series modality, or OT (Other) when the header has none; FHIR requires one."""
    return fhir_code(record.modality.split("\\")[0]) or "OT"


def modality(code: str, *, r5: bool) -> JsonObject:
    """A modality in the DCM system: a Coding in R4, a CodeableConcept in R5."""
    single = compact({"system": DCM_SYSTEM, "code": code, "display": modality_display(code)})
    return {"coding": [single]} if r5 else single


def _body_site(term: str, warnings: list[str], *, r5: bool) -> JsonObject | None:
    """BodyPartExamined as SNOMED CT (PS3.16 Annex L); an unknown term is kept as text, warned."""
    if not term:
        return None
    known = body_site_coding(term)
    if known is None:
        warnings.append(f"BodyPartExamined {term!r} is not a PS3.16 Annex L term; kept as text")
    if not r5:
        return known or {"display": term}
    return {"concept": compact({"coding": [known] if known else [], "text": term})}


def _laterality(value: str, *, r5: bool) -> JsonObject | None:
    known = laterality_coding(value, release="R5" if r5 else "R4") if value else None
    if known is None:
        return None
    return {"coding": [known]} if r5 else known


def _specimens(records: tuple[InstanceRecord, ...]) -> list[JsonObject]:
    identifiers = list(dict.fromkeys(v for r in records for v in r.specimens))
    uids = list(dict.fromkeys(v for r in records for v in r.specimen_uids))
    references = [typed_identifier_reference("Specimen", {"value": v}) for v in identifiers]
    if not references:
        references = [
            typed_identifier_reference(
                "Specimen", {"system": DICOM_UID_SYSTEM, "value": oid_urn(uid)}
            )
            for uid in uids
        ]
    return references


def _performers(records: tuple[InstanceRecord, ...]) -> list[JsonObject]:
    """Performing physicians (PRF) and operators (SPRF, secondary performer)."""
    performers = []
    for field, code, display in (
        ("performing_physicians", "PRF", "performer"),
        ("operators", "SPRF", "secondary performer"),
    ):
        for pn in dict.fromkeys(v for r in records for v in getattr(r, field)):
            name = display_name(pn)
            if name:
                function = {"system": PARTICIPATION_SYSTEM, "code": code, "display": display}
                performers.append({"function": {"coding": [function]}, "actor": practitioner(name)})
    return performers


def _instance(record: InstanceRecord) -> JsonObject:
    return compact(
        {
            "uid": record.sop_instance_uid,
            "sopClass": {"system": RFC3986_SYSTEM, "code": oid_urn(record.sop_class_uid)},
            "number": unsigned(record.instance_number),
            "title": _title(record),
        }
    )


def _title(record: InstanceRecord) -> str:
    """ContentLabel, DocumentTitle, the concept name, or else the SOP class's readable name."""
    for text in (record.content_label, record.document_title, record.concept_name):
        if text:
            return text
    name = UID(record.sop_class_uid).name
    return "" if name == record.sop_class_uid else name
