"""Accept storage SOP classes pynetdicom has no service for, and serve their C-STOREs.

pynetdicom picks the service for a DIMSE request by the message's SOP Class UID; for a class it
has no service for (retired ones such as Ultrasound Image Storage (Retired), vendor-private ones)
it aborts the association at the first C-STORE, losing every instance after it. Such classes are
therefore never in the AE's supported contexts. Per association, :class:`StorageNegotiation`

- adds a supported context (every transfer syntax we take) for each such class the requestor
  proposes: the known ones, and with ``dicom.accept_unknown_sop_classes`` also those
  :func:`~listener.scp.contexts.is_unknown_storage_class` takes for storage;
- accepts, for the same classes, a SOP Class Common Extended Negotiation naming the Storage
  Service Class. pynetdicom consults those before it picks a service, so their C-STOREs reach
  EVT_C_STORE like any other. Nothing of it goes to the requestor (the item has no reply).

Both happen in the EVT_SOP_COMMON handler, which pynetdicom 3 calls for every association request
right before it negotiates presentation contexts. Should a pynetdicom not call it, or not route by
those items, the classes are refused at negotiation: never accepted and then aborted.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from listener.logs import get_logger
from listener.scp.contexts import is_unknown_storage_class, known_uids

log = get_logger("listener.scp")

STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"


def served_by_pynetdicom(uid: str) -> bool:
    """Whether pynetdicom routes C-STOREs of SOP class ``uid`` to its storage service."""
    return issubclass(uid_to_service_class(uid), StorageServiceClass)


def _routes_by_common_extended() -> bool:
    """Whether this pynetdicom picks a request's service from the accepted common extended items."""
    try:
        source = inspect.getsource(Association._serve_request)
    except (AttributeError, OSError, TypeError):
        return False
    return "accepted_common_extended" in source


class StorageNegotiation:
    """Per-association acceptance of the storage classes pynetdicom does not serve by itself."""

    def __init__(
        self, storage_classes: Iterable[str], syntaxes: list[str], *, accept_unknown: bool
    ) -> None:
        storage = set(storage_classes)
        self._unserved = frozenset(uid for uid in storage if not served_by_pynetdicom(uid))
        #: The classes the AE itself supports: pynetdicom serves them without help.
        self.served = sorted(storage - self._unserved)
        self._syntaxes = syntaxes
        self._accept_unknown = accept_unknown
        self._known = known_uids()
        self._enabled = _routes_by_common_extended()
        if not self._enabled:
            log.warning(
                "this pynetdicom cannot route SOP classes it does not know; they are refused",
                classes_refused=len(self._unserved),
            )

    def bindings(self) -> list[Any]:
        """``evt_handlers`` entries for the AE's server."""
        return [(evt.EVT_SOP_COMMON, self._on_negotiation)] if self._enabled else []

    def takes(self, uid: str) -> bool:
        """Whether a proposed abstract syntax ``uid`` is accepted through this negotiation."""
        if uid in self._unserved:
            return True
        return self._accept_unknown and is_unknown_storage_class(uid, self._known)

    def _on_negotiation(self, event: evt.Event) -> dict[UID, SOPClassCommonExtendedNegotiation]:
        association = event.assoc
        request = association.requestor.primitive
        if request is None:
            return {}
        proposed = {str(c.abstract_syntax) for c in request.presentation_context_definition_list}
        taken = sorted(uid for uid in proposed if self.takes(uid))
        if taken:
            acceptor = association.acceptor
            extra = [build_context(uid, self._syntaxes) for uid in taken]
            acceptor.supported_contexts = [*acceptor.supported_contexts, *extra]
        return {UID(uid): _storage_service(uid) for uid in taken}


def _storage_service(uid: str) -> SOPClassCommonExtendedNegotiation:
    """An accepted common extended item: SOP class ``uid`` belongs to the Storage Service Class."""
    item = SOPClassCommonExtendedNegotiation()
    item.sop_class_uid = uid
    item.service_class_uid = STORAGE_SERVICE_CLASS
    return item
