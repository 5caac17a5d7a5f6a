"""Which proposed abstract syntaxes count as storage, and which need help to be served."""

from __future__ import annotations

import pytest

from listener.scp import negotiation
from listener.scp.contexts import is_unknown_storage_class, known_uids, storage_sop_classes
from listener.scp.negotiation import StorageNegotiation

CT = "1.2.840.10008.5.1.4.1.1.2"
RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"
SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SYNTAXES = ["1.2.840.10008.1.2.1"]


@pytest.mark.parametrize(
    ("uid", "storage"),
    [
        (SIEMENS_CSA_NON_IMAGE, True),  # vendor-private
        ("1.2.826.0.1.3680043.10.1234.99.1", True),  # made-up private
        ("1.2.840.10008.5.1.4.1.1.999.1", True),  # newer than pydicom, under the storage arc
        ("1.2.840.10008.5.1.4.9999.1", False),  # unknown DICOM UID outside the storage arc
        (STUDY_ROOT_FIND, False),  # a known service we do not offer
        ("1.2.840.10008.1.3.10", False),  # DICOMDIR: known, not storage
        ("1.2.3.x", False),  # not a UID
        ("1." + "2" * 70, False),  # longer than 64
        ("", False),
    ],
)
def test_unknown_storage_rule(uid: str, storage: bool) -> None:
    """Private UIDs and unknown ones under 1.2.840.10008.5.1.4.1.1 are storage; others are not."""
    assert is_unknown_storage_class(uid, known_uids()) is storage


def test_classes_pynetdicom_cannot_serve_are_not_left_to_it() -> None:
    """Retired US and the like are negotiated per association, never supported by the AE alone."""
    taking = StorageNegotiation(storage_sop_classes(), SYNTAXES, accept_unknown=False)

    assert CT in taking.served
    assert RETIRED_US not in taking.served
    assert taking.takes(RETIRED_US)
    assert not taking.takes(CT)  # the AE's own contexts cover it


def test_unknown_classes_follow_the_setting() -> None:
    """A private class is taken with accept_unknown_sop_classes, refused without it."""
    storage = storage_sop_classes()

    assert StorageNegotiation(storage, SYNTAXES, accept_unknown=True).takes(SIEMENS_CSA_NON_IMAGE)
    assert not StorageNegotiation(storage, SYNTAXES, accept_unknown=False).takes(
        SIEMENS_CSA_NON_IMAGE
    )
    assert not StorageNegotiation(storage, SYNTAXES, accept_unknown=True).takes(STUDY_ROOT_FIND)


def test_a_pynetdicom_that_cannot_route_them_gets_no_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without routing by common extended items, nothing is added: such classes are refused."""
    monkeypatch.setattr(negotiation, "_routes_by_common_extended", lambda: False)

    taking = StorageNegotiation(storage_sop_classes(), SYNTAXES, accept_unknown=True)

    assert taking.bindings() == []
    assert RETIRED_US not in taking.served


def test_this_pynetdicom_routes_by_common_extended_items() -> None:
    """The installed pynetdicom picks the service from accepted common extended items."""
    assert StorageNegotiation(storage_sop_classes(), SYNTAXES, accept_unknown=True).bindings()
