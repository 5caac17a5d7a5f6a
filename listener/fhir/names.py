"""DICOM person names (PN) as FHIR display strings and HumanNames.

A PN value is up to three component groups separated by ``=`` (alphabetic, ideographic,
phonetic), each ``Family^Given^Middle^Prefix^Suffix``.
"""

from __future__ import annotations

from typing import Any

# How FHIR marks a name's representation (ISO 21090 EN.representation).
_REPRESENTATION_URL = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
_REPRESENTATIONS = ("ABC", "IDE", "SYL")


def _components(group: str) -> list[str]:
    parts = [part.strip() for part in group.split("^")]
    return (parts + [""] * 5)[:5]


def _group_text(group: str, *, family_first: bool) -> str:
    family, given, middle, prefix, suffix = _components(group)
    order = (family, given, middle) if family_first else (given, middle, family)
    return " ".join(part for part in (prefix, *order, suffix) if part)


def _groups(pn: str) -> list[tuple[int, str]]:
    """(index, text) of each non-empty group.

    Ideographic and phonetic groups read family name first, as the CJK names they carry are written.
    """
    groups = pn.split("=")[:3]
    texts = ((i, _group_text(g, family_first=i > 0)) for i, g in enumerate(groups))
    return [(index, text) for index, text in texts if text]


def display_name(pn: str) -> str:
    """``Family^Given`` -> ``Given Family``, from the first group that has a name; "" if none."""
    return next((text for _index, text in _groups(pn)), "")


def human_names(pn: str) -> list[dict[str, Any]]:
    """One HumanName per non-empty component group, marked ideographic or phonetic if not first."""
    names = []
    groups = pn.split("=")
    for index, text in _groups(pn):
        family, given, middle, prefix, suffix = _components(groups[index])
        name: dict[str, Any] = {"text": text}
        if family:
            name["family"] = family
        if given or middle:
            name["given"] = [part for part in (given, middle) if part]
        if prefix:
            name["prefix"] = [prefix]
        if suffix:
            name["suffix"] = [suffix]
        if index:
            name["extension"] = [{"url": _REPRESENTATION_URL, "valueCode": _REPRESENTATIONS[index]}]
        names.append(name)
    return names
