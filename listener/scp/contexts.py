"""What the SCP accepts: storage SOP classes, transfer syntaxes, and the statuses it answers."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary  # pydicom's table of every UID it knows
from pynetdicom import sop_class

from listener.dicom_codes import (
    EXPLICIT_VR_BIG_ENDIAN,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    STORAGE_COMMITMENT_PUSH,
    UNCOMPRESSED_SYNTAXES,
)
from listener.model import StoreOutcome

# Storage-named SOP classes that are not stored instances.
_NOT_STORAGE = {
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (DICOMDIR)
    STORAGE_COMMITMENT_PUSH,
    "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
}
# Where PS3.4 puts the storage SOP classes; an unknown DICOM UID elsewhere may be another service.
_DICOM_ROOT = "1.2.840.10008."
_STORAGE_ARC = "1.2.840.10008.5.1.4.1.1."
_UID_CHARACTERS = frozenset("0123456789.")
# Transfer syntaxes that are file encodings, not network encodings.
_NOT_NETWORK = {"1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2"}  # RFC 2557 MIME, XML

# C-STORE statuses (PS3.4 Annex B.2.3); docs/conformance-statement.md lists them for integrators.
STATUS_FOR_OUTCOME = {
    StoreOutcome.STORED: 0x0000,
    StoreOutcome.DUPLICATE: 0x0000,
    StoreOutcome.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
    StoreOutcome.TOO_LARGE: 0xA701,  # Refused: Out of Resources (over dicom.max_instance_mb)
    StoreOutcome.MISSING_UID: 0xA900,  # Error: Data Set does not match SOP Class
    StoreOutcome.INVALID_UID: 0xA901,  # Error: Data Set does not match SOP Class (bad UID)
    StoreOutcome.MISMATCH: 0xA902,  # Error: the SOP Class/Instance differ from the request
    StoreOutcome.NOT_DICOM: 0xC000,  # Error: Cannot understand
    StoreOutcome.TRUNCATED: 0xC001,  # Error: Cannot understand (dataset ends early)
    StoreOutcome.FAILED: PROCESSING_FAILURE,
    StoreOutcome.SOP_CLASS_NOT_NEGOTIATED: 0x0122,  # Refused: SOP Class not supported (on context)
    StoreOutcome.WRONG_ENCODING: 0xC002,  # Cannot understand: not in its context's syntax
    StoreOutcome.NO_DATASET: 0xC003,  # Cannot understand: C-STORE without a data set
    StoreOutcome.KEPT_FIRST: 0x0000,  # changed re-send acknowledged, stored version kept
    StoreOutcome.CHANGED_REFUSED: PROCESSING_FAILURE,  # with the ErrorComment below
}
# Error Comment (0000,0902, at most 64 characters) sent with a status where one helps the sender.
COMMENT_FOR_OUTCOME = {
    StoreOutcome.CHANGED_REFUSED: "SOP Instance UID already stored with other content",
}


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pydicom or pynetdicom knows, retired ones included, sorted."""
    from_pydicom = {
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name
    }
    known = from_pydicom | set(sop_class._STORAGE_CLASSES.values())
    return sorted(known - _NOT_STORAGE)


def transfer_syntaxes() -> list[str]:
    """Every network transfer syntax pydicom knows, uncompressed first, compressed ones included."""
    uncompressed = [*UNCOMPRESSED_SYNTAXES, EXPLICIT_VR_BIG_ENDIAN]
    others = sorted(
        uid
        for uid, (_name, kind, *_rest) in UID_dictionary.items()
        if kind == "Transfer Syntax" and uid not in _NOT_NETWORK and uid not in uncompressed
    )
    return uncompressed + others


def known_uids() -> frozenset[str]:
    """Every UID pydicom or pynetdicom has a name for: SOP classes, services, syntaxes..."""
    from_pynetdicom = {
        uid for group in sop_class._SERVICE_TO_UID_GROUP.values() for uid in group.values()
    }
    return frozenset(UID_dictionary) | from_pynetdicom


def is_unknown_storage_class(uid: str, known: frozenset[str]) -> bool:
    """Whether a proposed abstract syntax that nobody here knows is taken for a storage SOP class.

    A private UID (outside the DICOM root, e.g. a vendor's) or an unknown UID under the storage
    SOP class arc is; an unknown DICOM UID elsewhere may be a service we do not offer, so is not.
    """
    if uid in known or not uid or len(uid) > 64 or not set(uid) <= _UID_CHARACTERS:
        return False
    return not uid.startswith(_DICOM_ROOT) or uid.startswith(_STORAGE_ARC)
