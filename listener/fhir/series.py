"""The series and instance elements of an ImagingStudy, for R4 and R5."""

from __future__ import annotations

from listener.fhir.common import (
    DATA_ABSENT_REASON,
    DCM_SYSTEM,
    DICOM_UID_SYSTEM,
    PARTICIPATION_SYSTEM,
    RFC3986_SYSTEM,
    JsonObject,
    codeable_concept,
    coding,
    compact,
    fhir_code,
    identifier,
    oid_urn,
    person,
    sct_code,
    staff_person,
    typed_identifier_reference,
    unsigned,
)
from listener.fhir.datetime import started
from listener.fhir.terminology import body_site_coding, laterality_coding, modality_display
from listener.model import InstanceRecord, Issuer, SeriesState

# CID 244 laterality modifiers of an anatomic region (SNOMED CT) -> DICOM Laterality value.
_LATERALITY_MODIFIERS = {"7771000": "L", "24028007": "R", "51440002": "B"}


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
            "bodySite": _anatomic_region(records, r5=r5)
            or _body_site(pick("body_part_examined"), warnings, r5=r5),
            "laterality": _laterality(
                pick("laterality") or pick("image_laterality") or _modifier_laterality(records),
                r5=r5,
            ),
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
    """The series modality (the first value of Modality), or "" when the header has none."""
    return fhir_code(record.modality.split("\\")[0])


def modality(code: str, *, r5: bool) -> JsonObject:
    """A modality in the DCM system: a Coding in R4, a CodeableConcept in R5.

    Without a code the element (required on a series) says, with data-absent-reason, that the
    modality is unknown rather than inventing one.
    """
    if not code:
        return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}
    single = compact({"system": DCM_SYSTEM, "code": code, "display": modality_display(code)})
    return {"coding": [single]} if r5 else single


def _anatomic_region(records: tuple[InstanceRecord, ...], *, r5: bool) -> JsonObject | None:
    """AnatomicRegionSequence (coded, SRT translated to SNOMED CT): preferred for bodySite.

    R4's Coding holds the region alone; R5's concept text also names its modifiers.
    """
    record = next((r for r in records if r.anatomic_regions), None)
    if record is None:
        return None
    region = sct_code(record.anatomic_regions[0])
    if not r5:
        return coding(region) or ({"display": region.meaning} if region.meaning else None)
    concept = codeable_concept(region)
    modifiers = [m.meaning for m in record.anatomic_region_modifiers if m.meaning]
    if modifiers and region.meaning:
        concept["text"] = f"{region.meaning} ({', '.join(modifiers)})"
    return {"concept": concept} if concept else None


def _modifier_laterality(records: tuple[InstanceRecord, ...]) -> str:
    """L, R or B from an anatomic region's laterality modifier (CID 244), else ""."""
    modifiers = (sct_code(m) for r in records for m in r.anatomic_region_modifiers)
    sides = (_LATERALITY_MODIFIERS.get(m.value, "") for m in modifiers if m.scheme == "SCT")
    return next((side for side in sides if side), "")


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
    """Specimens by identifier (its issuer as system), else by Specimen UID."""
    identifiers = list(dict.fromkeys(v for r in records for v in r.specimens))
    issuers: dict[str, Issuer | None] = {}
    for issued in (s for r in records for s in r.specimen_issuers):
        issuers.setdefault(issued.value, issued.issuer)
    uids = list(dict.fromkeys(v for r in records for v in r.specimen_uids))
    references = [
        typed_identifier_reference("Specimen", identifier(v, issuer=issuers.get(v)))
        for v in identifiers
    ]
    if not references:
        references = [
            typed_identifier_reference(
                "Specimen", {"system": DICOM_UID_SYSTEM, "value": oid_urn(uid)}
            )
            for uid in uids
        ]
    return references


def _performers(records: tuple[InstanceRecord, ...]) -> list[JsonObject]:
    """Performing physicians (PRF) and operators (SPRF, secondary performer).

    Each actor is a Practitioner with the display name and, when the identification sequence
    identifies that person, an identifier; a person identified but not named is kept too.
    """
    performers = []
    for field, code, display in (
        ("performing_physicians", "PRF", "performer"),
        ("operators", "SPRF", "secondary performer"),
    ):
        staff = tuple(dict.fromkeys(s for r in records for s in getattr(r, _IDS[field])))
        names = dict.fromkeys(v for r in records for v in getattr(r, field))
        actors = [staff_person(pn, staff) for pn in names]
        actors += [person("", s.codes) for s in staff if not s.name]
        function = {"system": PARTICIPATION_SYSTEM, "code": code, "display": display}
        performers += [
            {"function": {"coding": [function]}, "actor": actor} for actor in actors if actor
        ]
    return performers


_IDS = {"performing_physicians": "performing_physician_ids", "operators": "operator_ids"}


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
    """What FHIR maps to the title: ContentLabel, DocumentTitle, the concept name, ImageType.

    Never the SOP class name: that says nothing about one instance. None of them gives no title.
    """
    for text in (
        record.content_label,
        record.document_title,
        record.concept_name,
        record.image_type,
    ):
        if text:
            return text
    return ""
