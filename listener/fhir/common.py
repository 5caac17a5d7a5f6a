"""Pieces shared by the R4 and R5 mappings: systems, identifiers, codings, references."""

from __future__ import annotations

import re
from typing import Any

from pydicom.sr._snomed_dict import mapping as _SNOMED_MAPPING

from listener.fhir.names import display_name
from listener.model import Code, Issuer, StaffId

DICOM_UID_SYSTEM = "urn:dicom:uid"
RFC3986_SYSTEM = "urn:ietf:rfc:3986"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

# DICOM Coding Scheme Designators (PS3.16 Table 8-1) with a FHIR system URI: each URI is the
# canonical URL of that code system in HL7 Terminology (THO). SRT (legacy SNOMED RT) codes are not
# SNOMED CT codes; they are translated with pydicom's SRT -> SCT table (see ``coding``).
SNOMED_SYSTEM = "http://snomed.info/sct"
CODING_SYSTEMS = {
    "SCT": SNOMED_SYSTEM,
    "LN": "http://loinc.org",
    "DCM": DCM_SYSTEM,
    "UCUM": "http://unitsofmeasure.org",
    "RADLEX": "http://radlex.org",
    "NCIt": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "C4": "http://www.ama-assn.org/go/cpt",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
}

JsonObject = dict[str, Any]


def oid_urn(uid: str) -> str:
    """A DICOM UID as the URI FHIR uses for it."""
    return f"urn:oid:{uid}"


def unsigned(value: int | None) -> int | None:
    """``value`` if it fits FHIR's unsignedInt, else None."""
    return value if value is not None and 0 <= value <= 2_147_483_647 else None


def compact(resource: JsonObject) -> JsonObject:
    """Drop keys whose value is None, empty text or an empty list (FHIR forbids empty elements)."""
    return {key: value for key, value in resource.items() if value not in (None, "", [], {})}


def fhir_code(value: str) -> str:
    """A value fit for FHIR's ``code`` type: no leading, trailing or repeated whitespace."""
    return re.sub(r"\s+", " ", value).strip()


def issuer_system(issuer: Issuer | None) -> str | None:
    """The identifier system an HL7v2 HD issuer names, when it is a universal ID FHIR can use."""
    if issuer is None or not issuer.universal_id:
        return None
    kind, value = issuer.universal_id_type.upper(), issuer.universal_id
    if kind == "ISO":
        return oid_urn(value)
    if kind == "UUID":
        return f"urn:uuid:{value.lower()}"
    if kind in ("URI", "URL") and re.fullmatch(r"\S+:\S+", value):
        return value
    return None


def identifier(value: str, *, issuer: Issuer | None = None, system: str = "") -> JsonObject:
    """An Identifier with the issuer as system (universal ID) and/or assigner (its name)."""
    result: JsonObject = {}
    chosen = issuer_system(issuer) or system
    if chosen:
        result["system"] = chosen
    result["value"] = value
    if issuer is not None:
        name = issuer.local_id or ("" if issuer_system(issuer) else issuer.universal_id)
        if name:
            result["assigner"] = {"display": name}
    return result


def accession_identifier(value: str, issuer: Issuer | None) -> JsonObject:
    """The accession number as an Identifier typed ACSN (v2-0203)."""
    return {
        "type": {"coding": [{"system": V2_0203_SYSTEM, "code": "ACSN"}]},
        **identifier(value, issuer=issuer),
    }


def sct_code(code: Code) -> Code:
    """A legacy SRT code as the SNOMED CT code it became (PS3.16 Annex O, pydicom's table)."""
    translated = _SRT_TO_SCT.get(code.value) if code.scheme == "SRT" else None
    return Code(translated, "SCT", code.meaning) if translated else code


_SRT_TO_SCT: dict[str, str] = _SNOMED_MAPPING["SRT"]


def coding(code: Code) -> JsonObject | None:
    """A DICOM code as a FHIR Coding; None when it has no code value."""
    if not code.value:
        return None
    code = sct_code(code)
    system = CODING_SYSTEMS.get(code.scheme) or (
        oid_urn(code.scheme_uid) if code.scheme_uid else None
    )
    return compact({"system": system, "code": fhir_code(code.value), "display": code.meaning})


def codeable_concept(code: Code) -> JsonObject:
    """A DICOM code as a CodeableConcept, its meaning as the text."""
    single = coding(code)
    return compact({"coding": [single] if single else [], "text": code.meaning})


def practitioner(display: str) -> JsonObject:
    """A Practitioner reference known only by name."""
    return {"type": "Practitioner", "display": display}


def person(pn: str, codes: tuple[Code, ...] = ()) -> JsonObject | None:
    """A Practitioner reference for a DICOM person name and identification codes; None if neither.

    The first identification code (Person Identification Code Sequence) is the identifier: its
    value the code value, its system the coding scheme's UID, its assigner the scheme designator.
    """
    name = display_name(pn)
    code = next((c for c in codes if c.value), None)
    if not name and code is None:
        return None
    reference: JsonObject = {"type": "Practitioner"}
    if code is not None:
        reference["identifier"] = compact(
            {
                "system": oid_urn(code.scheme_uid) if code.scheme_uid else None,
                "value": code.value,
                "assigner": {"display": code.scheme} if code.scheme else None,
            }
        )
    if name:
        reference["display"] = name
    return reference


def staff_person(pn: str, staff: tuple[StaffId, ...]) -> JsonObject | None:
    """``person`` for a name, with the identification codes ``staff`` has for that name."""
    codes = next((s.codes for s in staff if s.name == pn), ())
    return person(pn, codes)


def typed_identifier_reference(resource_type: str, value: JsonObject) -> JsonObject:
    """A logical reference: a resource of ``resource_type`` known by one identifier."""
    return {"type": resource_type, "identifier": value}
