"""Body site, laterality and modality lookups give the codes DICOM and FHIR define, or nothing."""

from __future__ import annotations

import re
from typing import cast

import pytest
from pydicom.sr._concepts_dict import concepts
from pydicom.sr.codedict import codes

from listener.fhir.common import SNOMED_SYSTEM
from listener.fhir.terminology import (
    BODY_PART_EXAMINED,
    CID_4031_TERMS,
    LATERALITY_R4,
    LATERALITY_R5,
    body_site_coding,
    laterality_coding,
    modality_display,
)

CID_4031 = {code.value: code.meaning for code in codes.cid4031.concepts.values()}

# pydicom's SCT concept table: keyword -> {code: (meaning, CIDs that use it)}. It is untyped in
# pydicom, so it is cast here; codes.SCT gives the same codes and meanings without the CIDs.
SCT_CONCEPTS = cast("dict[str, dict[str, tuple[str, list[int]]]]", concepts["SCT"])


def _sct_meanings(*, in_context_group: bool) -> dict[str, set[str]]:
    """SNOMED CT code -> the code meanings pydicom has for it, or only those of context groups.

    pydicom can hold one code under several keywords (``Kidney`` and ``KidneyStructure``), each
    with its own meaning and the context groups (CIDs) that use it.
    """
    meanings: dict[str, set[str]] = {}
    for by_code in SCT_CONCEPTS.values():
        for value, (meaning, cids) in by_code.items():
            if cids or not in_context_group:
                meanings.setdefault(value, set()).add(meaning)
    return meanings


SCT_MEANINGS = _sct_meanings(in_context_group=False)
SCT_GROUP_MEANINGS = _sct_meanings(in_context_group=True)


@pytest.mark.parametrize(
    ("term", "keyword"),
    [
        ("ABDOMEN", "Abdomen"),
        ("ABDOMENPELVIS", "AbdomenAndPelvis"),
        ("CHEST", "Chest"),
        ("HEAD", "Head"),
        ("CSPINE", "CervicalSpine"),
        ("LSPINE", "LumbarSpine"),
        ("KNEE", "Knee"),
        ("HIP", "HipJoint"),
        ("PELVIS", "Pelvis"),
        ("WHOLEBODY", "EntireBody"),
        ("UPPERARM", "UpperArm"),
    ],
)
def test_known_term_maps_to_its_cid4031_concept(term: str, keyword: str) -> None:
    """A Table L-1 term gives the code and meaning pydicom has for that CID 4031 concept."""
    concept = getattr(codes.cid4031, keyword)
    assert body_site_coding(term) == {
        "system": SNOMED_SYSTEM,
        "code": concept.value,
        "display": concept.meaning,
    }


def test_snomed_system_is_the_fhir_uri() -> None:
    """SNOMED CT codings use the system URI FHIR defines for SNOMED CT."""
    assert SNOMED_SYSTEM == "http://snomed.info/sct"


@pytest.mark.parametrize(
    ("raw", "term"),
    [
        ("  chest ", "CHEST"),
        ("Abdomen Pelvis", "ABDOMENPELVIS"),
        ("neck_chest", "NECKCHEST"),
        ("l spine", "LSPINE"),
        ("Chest\tAbdomen", "CHESTABDOMEN"),
    ],
)
def test_term_is_matched_without_case_blanks_or_underscores(raw: str, term: str) -> None:
    """Case, surrounding blanks and spaces or underscores between words do not matter."""
    assert body_site_coding(raw) == body_site_coding(term)
    assert body_site_coding(raw) is not None


@pytest.mark.parametrize("term", ["", "   ", "NOWHERE", "CHEST-X", "ELBOWS"])
def test_unknown_or_empty_term_gives_none(term: str) -> None:
    """A term not in the table, or no term at all, gives no coding."""
    assert body_site_coding(term) is None


def test_sct_meanings_come_from_pydicoms_public_sct_codes() -> None:
    """The meanings read from pydicom's concept table are those ``codes.SCT`` gives."""
    public: dict[str, set[str]] = {}
    for code in codes.SCT.concepts.values():
        public.setdefault(code.value, set()).add(code.meaning)
    assert public == SCT_MEANINGS


def test_every_code_is_a_snomed_concept_pydicom_knows_with_its_meaning() -> None:
    """Every code is an SCT concept in pydicom, shown with a meaning pydicom has for that code."""
    unknown = {
        term: entry for term, entry in BODY_PART_EXAMINED.items() if entry[0] not in SCT_MEANINGS
    }
    assert unknown == {}
    drift = {
        term: (entry, sorted(SCT_MEANINGS[entry[0]]))
        for term, entry in BODY_PART_EXAMINED.items()
        if entry[1] not in SCT_MEANINGS[entry[0]]
    }
    assert drift == {}


def test_display_is_a_context_group_meaning_when_pydicom_has_one() -> None:
    """A code that pydicom uses in some CID shows one of those meanings, not a bare SNOMED name."""
    drift = {
        term: (entry, sorted(SCT_GROUP_MEANINGS[entry[0]]))
        for term, entry in BODY_PART_EXAMINED.items()
        if entry[0] in SCT_GROUP_MEANINGS and entry[1] not in SCT_GROUP_MEANINGS[entry[0]]
    }
    assert drift == {}


def test_terms_sharing_a_code_share_its_display() -> None:
    """However many terms use a code (CHEST and THORAX, KIDNEY and ENDORENAL), it reads the same."""
    displays: dict[str, set[str]] = {}
    for code, display in BODY_PART_EXAMINED.values():
        displays.setdefault(code, set()).add(display)
    assert {code: shown for code, shown in displays.items() if len(shown) > 1} == {}


def test_cid4031_terms_keep_their_cid4031_concept_and_meaning() -> None:
    """The CID 4031 rows hold CID 4031 codes, each shown with pydicom's CID 4031 meaning."""
    assert CID_4031_TERMS.issubset(BODY_PART_EXAMINED)
    drift = {
        term: BODY_PART_EXAMINED[term]
        for term in CID_4031_TERMS
        if CID_4031.get(BODY_PART_EXAMINED[term][0]) != BODY_PART_EXAMINED[term][1]
    }
    assert drift == {}


def test_cid4031_terms_are_every_term_with_a_cid4031_code() -> None:
    """No row outside CID_4031_TERMS has a code that pydicom's CID 4031 holds."""
    outside = {
        term: entry
        for term, entry in BODY_PART_EXAMINED.items()
        if term not in CID_4031_TERMS and entry[0] in CID_4031
    }
    assert outside == {}


@pytest.mark.parametrize(
    ("term", "code", "display"),
    [
        ("BRAIN", "12738006", "Brain"),
        ("KIDNEY", "64033007", "Kidney"),
        ("LIVER", "10200004", "Liver"),
        ("LUNG", "39607008", "Lung"),
        ("AORTA", "15825003", "Aorta"),
        ("CCA", "32062004", "Common carotid artery"),
        ("PORTALV", "32764006", "Portal vein"),
        ("INFVENACAVA", "64131007", "Inferior vena cava"),
        ("ENDOVESICAL", "48367006", "Endo-vesical"),
    ],
)
def test_organ_and_vessel_terms_map_to_their_table_l1_code(
    term: str, code: str, display: str
) -> None:
    """Organ and vessel terms outside CID 4031 give the Table L-1 code and pydicom's meaning."""
    assert body_site_coding(term) == {"system": SNOMED_SYSTEM, "code": code, "display": display}
    assert term not in CID_4031_TERMS
    assert display in SCT_MEANINGS[code]


def test_brain_is_coded_as_pydicoms_brain_concept() -> None:
    """BRAIN, a very common value, gives SNOMED CT 12738006 "Brain" as pydicom has it."""
    assert body_site_coding("brain") == {
        "system": SNOMED_SYSTEM,
        "code": codes.SCT.Brain.value,
        "display": codes.SCT.Brain.meaning,
    }
    assert codes.SCT.Brain.value == "12738006"


@pytest.mark.parametrize(
    ("term", "same_as"),
    [
        ("ENDOARTERIAL", "ARTERY"),
        ("ENDORENAL", "KIDNEY"),
        ("ENDOVAGINAL", "VAGINA"),
        ("ENDOVENOUS", "VEIN"),
        ("ARM", "UPPERARM"),
        ("LEG", "LOWERLEG"),
        ("GLUTEAL", "BUTTOCK"),
        ("SUPRAPUBIC", "HYPOGASTRIC"),
        ("THORAX", "CHEST"),
    ],
)
def test_synonym_terms_give_the_same_coding(term: str, same_as: str) -> None:
    """Table L-1 synonyms (ENDO* beside the organ, older ARM and LEG) code as their partner."""
    assert body_site_coding(term) == body_site_coding(same_as)
    assert body_site_coding(term) is not None


def test_chest_keeps_its_cid4031_code() -> None:
    """CHEST stays 816094009 from CID 4031, not Table L-1's older 43799004."""
    assert BODY_PART_EXAMINED["CHEST"] == ("816094009", "Chest")


def test_every_term_is_a_valid_body_part_examined_value() -> None:
    """Every key is a CS value as Body Part Examined holds it: upper case, at most 16 characters."""
    bad = [term for term in BODY_PART_EXAMINED if not re.fullmatch(r"[A-Z0-9]{1,16}", term)]
    assert bad == []


def test_table_covers_the_common_regions() -> None:
    """The common regions the listener sees most are all present."""
    expected = {
        "ABDOMEN", "ABDOMENPELVIS", "ANKLE", "BREAST", "CHEST", "CHESTABDOMEN", "CSPINE",
        "ELBOW", "EXTREMITY", "FOOT", "HAND", "HEAD", "HEART", "HIP", "KNEE", "LSPINE", "NECK",
        "PELVIS", "SHOULDER", "SKULL", "TSPINE", "WHOLEBODY", "WRIST",
        "BRAIN", "KIDNEY", "LIVER", "LUNG", "AORTA", "SPLEEN", "UTERUS", "THYROID",
    }  # fmt: skip
    assert expected <= BODY_PART_EXAMINED.keys()


@pytest.mark.parametrize(
    ("value", "code", "display"),
    [
        ("L", "419161000", "Unilateral left"),
        ("R", "419465000", "Unilateral right"),
        ("B", "51440002", "Right and left"),
    ],
)
def test_r4_laterality_uses_the_fhir_bodysite_laterality_codes(
    value: str, code: str, display: str
) -> None:
    """R4 codes L, R and B from the FHIR bodysite-laterality value set."""
    assert laterality_coding(value, release="R4") == {
        "system": SNOMED_SYSTEM,
        "code": code,
        "display": display,
    }


@pytest.mark.parametrize(
    ("value", "keyword"),
    [("L", "Left"), ("R", "Right"), ("B", "Bilateral")],
)
def test_r5_laterality_uses_dicom_cid244(value: str, keyword: str) -> None:
    """R5 codes L, R and B with the code and meaning pydicom has in CID 244."""
    concept = getattr(codes.cid244, keyword)
    assert laterality_coding(value, release="R5") == {
        "system": SNOMED_SYSTEM,
        "code": concept.value,
        "display": concept.meaning,
    }


@pytest.mark.parametrize("release", ["R4", "R5"])
def test_unpaired_is_never_coded(release: str) -> None:
    """U means unpaired (no left or right), not CID 244's Unilateral: never a laterality."""
    assert "U" not in LATERALITY_R4 and "U" not in LATERALITY_R5
    assert laterality_coding("U", release=release) is None


@pytest.mark.parametrize("release", ["R4", "R5"])
def test_laterality_ignores_case_and_blanks(release: str) -> None:
    """Laterality is matched without case and surrounding blanks."""
    assert laterality_coding(" l ", release=release) == laterality_coding("L", release=release)
    assert laterality_coding("r", release=release) == laterality_coding("R", release=release)


@pytest.mark.parametrize("release", ["R4", "R5"])
@pytest.mark.parametrize("value", ["", " ", "X", "LEFT", "LR"])
def test_unknown_laterality_gives_none(value: str, release: str) -> None:
    """A value that is not a DICOM laterality gives no coding."""
    assert laterality_coding(value, release=release) is None


def test_unknown_release_is_rejected() -> None:
    """A release other than R4 or R5 is a programming error."""
    with pytest.raises(ValueError, match="R6"):
        laterality_coding("L", release="R6")


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("CT", "Computed Tomography"),
        ("MR", "Magnetic Resonance"),
        ("CR", "Computed Radiography"),
        ("US", "Ultrasound"),
        ("DX", "Digital Radiography"),
        ("SR", "Structured Report Document"),
        ("SEG", "Segmentation"),
    ],
)
def test_modality_display_is_the_dcm_meaning(code: str, display: str) -> None:
    """A modality code gives its DCM code meaning."""
    assert modality_display(code) == display


def test_modality_display_covers_cid29_and_cid33() -> None:
    """Every code of CID 29 and CID 33 has its pydicom meaning as display."""
    concepts = [*codes.cid29.concepts.values(), *codes.cid33.concepts.values()]
    wrong = {c.value: c.meaning for c in concepts if modality_display(c.value) != c.meaning}
    assert wrong == {}


@pytest.mark.parametrize("code", ["", "XX", "CHEST"])
def test_unknown_modality_gives_none(code: str) -> None:
    """A code that is not a DICOM modality has no display."""
    assert modality_display(code) is None
