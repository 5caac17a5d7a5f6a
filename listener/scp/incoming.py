"""One DIMSE message being received: its command set, where its data set goes, its refusal.

:class:`Incoming` takes the message's PDVs one by one (PS3.8 Annex E). The command set is
decoded once complete; a C-STORE data set is then checked and streamed to a spool file, any other
data set is held in memory up to a bound. Once refused, the rest of the data set is only counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import VR
from pynetdicom.association import Association
from pynetdicom.dimse_messages import _MESSAGE_TYPES
from pynetdicom.dsutils import decode

from listener.dicom_codes import DEFLATED_SYNTAXES, OUT_OF_RESOURCES
from listener.model import StoreOutcome
from listener.scp.contexts import STATUS_FOR_OUTCOME
from listener.scp.file_meta import file_header
from listener.scp.spool import SpoolFile
from listener.scp.spool_pool import SpoolPool
from listener.scp.store_request import C_STORE_RQ, NO_DATASET, StoreRequest, read_store_request

_MAX_COMMAND = 1 << 16  # a command set is a few hundred bytes; this is far beyond any real one
_RESOURCE_LIMITATION = 0x0213  # DIMSE-N failure (PS3.7 C.5)
_VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)
# Deflated data sets cannot be checked by their first bytes (pydicom flags only the first).
_RESPONSE_FIELDS = (
    ("AffectedSOPClassUID", "AffectedSOPClassUID"),
    ("RequestedSOPClassUID", "AffectedSOPClassUID"),
    ("AffectedSOPInstanceUID", "AffectedSOPInstanceUID"),
    ("RequestedSOPInstanceUID", "AffectedSOPInstanceUID"),
    ("ActionTypeID", "ActionTypeID"),
    ("EventTypeID", "EventTypeID"),
)


class ProtocolError(Exception):
    """A violation of PS3.7/PS3.8 that ends the association (A-P-ABORT)."""


@dataclass(frozen=True, slots=True)
class ReceiveLimits:
    """What a message may cost: disk, memory and time."""

    spool_dir: Path
    max_instance_bytes: int
    max_other_dataset_bytes: int
    min_free_bytes: int
    window_seconds: float  # dicom.dimse_timeout_seconds
    min_bytes_per_second: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """The status a message is answered with instead of being served, and why."""

    status: int
    reason: str
    outcome: StoreOutcome | None = None  # how a refused C-STORE is counted


@dataclass(frozen=True, slots=True)
class Spooled:
    """A received C-STORE data set on disk and the SHA-256 of its bytes (File Meta excluded)."""

    path: Path
    digest: str
    synced: Callable[[], None] | None  # waits for the file's data sync (raises its OSError)
    size: int  # bytes in the file, File Meta included


class Progress:
    """Each window of ``window_seconds`` must bring ``min_bytes_per_second`` x window bytes."""

    def __init__(self, limits: ReceiveLimits, started: float) -> None:
        self._window = limits.window_seconds
        self._needed = max(1, int(limits.min_bytes_per_second * limits.window_seconds))
        self._start = started
        self._bytes = 0

    def add(self, count: int) -> None:
        """Count bytes that arrived."""
        self._bytes += count

    def stalled(self, now: float) -> str | None:
        """Why the window that ended is too slow; None while in time (a new window starts)."""
        elapsed = now - self._start
        if elapsed < self._window:
            return None
        if self._bytes >= self._needed:
            self._start, self._bytes = now, 0
            return None
        return f"{self._bytes} bytes in {elapsed:.1f} s, fewer than {self._needed}"


class Incoming:
    """The state of the message being received (used under its receiver's lock)."""

    def __init__(
        self, limits: ReceiveLimits, started: float, pool: SpoolPool | None = None
    ) -> None:
        self._limits = limits
        self._pool = pool
        self.progress = Progress(limits, started)
        self.received = 0
        self._command_bytes = bytearray()
        self.command = Dataset()  # pydicom's decoding, unless read as a plain C-STORE-RQ
        self.store: StoreRequest | None = None  # a plain C-STORE-RQ, read directly
        self.command_field = -1  # not decoded yet
        self.context_id: int | None = None
        self.buffer = bytearray()
        self._spool: SpoolFile | None = None
        self._explicit_vr = False
        self._head = b""
        self.refusal: Refusal | None = None

    def take(
        self, assoc: Association, context_id: int, header: int, payload: bytes | memoryview
    ) -> bool:
        """Add one PDV (its control header and data); True when the message is complete.

        ``payload`` may be a view of the PDU's buffer (``listener.scp.pdata``): a data set's
        bytes go to the spool file without a copy.
        """
        self.received += len(payload)
        self.progress.add(len(payload) + 1)
        last = bool(header & 2)
        if header & 1:
            return self._take_command(assoc, context_id, bytes(payload), last)
        return self._take_dataset(context_id, payload, last)

    def spooled(self) -> Spooled | None:
        """The complete spool file of an accepted C-STORE data set, with its content digest."""
        spool = self._spool
        if spool is None or spool.path is None or self.refusal is not None:
            return None
        synced = spool.synced
        return Spooled(
            spool.path, spool.digest, None if synced is None else synced.result, spool.size
        )

    def command_set(self) -> Dataset:
        """The command set as pydicom decodes it (decoded now if it was read directly)."""
        if self.store is not None and len(self.command) == 0:
            self.command = decode_command(self._command_bytes)[0]
        return self.command

    def sync_spool(self) -> None:
        """Make the complete spool file durable (``SpoolFile.sync``); its handler awaits that."""
        if self._spool is not None:
            self._spool.sync()

    def discard(self) -> None:
        """Remove the spool file and release the buffer."""
        if self._spool is not None:
            self._spool.discard()
        self.buffer = bytearray()

    def _take_command(
        self, assoc: Association, context_id: int, payload: bytes, last: bool
    ) -> bool:
        if self.command_field >= 0:
            raise ProtocolError("a command fragment after the command set was complete")
        self._command_bytes += payload
        if len(self._command_bytes) > _MAX_COMMAND:
            raise ProtocolError(f"command set longer than {_MAX_COMMAND} bytes")
        if not last:
            return False
        self.context_id = context_id
        self.store = read_store_request(self._command_bytes)
        if self.store is not None:
            self.command_field, has_dataset = C_STORE_RQ, self.store.has_dataset
        else:
            self.command, self.command_field, has_dataset = decode_command(self._command_bytes)
        if self.command_field == C_STORE_RQ:
            if not has_dataset:
                self._refuse(StoreOutcome.NO_DATASET, "C-STORE request without a data set")
                return True
            self._open_spool(assoc)
        return not has_dataset

    def _open_spool(self, assoc: Association) -> None:
        context = assoc._accepted_cx.get(self.context_id or 0)
        if context is None:
            raise ProtocolError(f"C-STORE on presentation context {self.context_id}, not accepted")
        if self.store is not None:
            sop_class, sop_instance = self.store.sop_class_uid, self.store.sop_instance_uid
        else:
            sop_class = _uid(self.command.get("AffectedSOPClassUID"))
            sop_instance = _uid(self.command.get("AffectedSOPInstanceUID"))
        abstract = _uid(context.abstract_syntax)
        if sop_class != abstract:
            reason = f"SOP Class {sop_class} on a presentation context for {abstract}"
            self._refuse(StoreOutcome.SOP_CLASS_NOT_NEGOTIATED, reason)
            return
        syntax = _uid(context.transfer_syntax[0])
        self._explicit_vr = _explicit_vr(syntax)
        try:
            header = file_header(sop_class, sop_instance, syntax)
        except Exception:  # noqa: BLE001 - any UID pydicom cannot write is unusable
            self._refuse(StoreOutcome.INVALID_UID, "request UIDs cannot form the File Meta")
            return
        limits = self._limits
        self._spool = SpoolFile(
            limits.spool_dir,
            meta=header,
            max_bytes=limits.max_instance_bytes,
            min_free=limits.min_free_bytes,
            pool=self._pool,
        )

    def _take_dataset(self, context_id: int, payload: bytes | memoryview, last: bool) -> bool:
        if self.command_field < 0:
            raise ProtocolError("a data set fragment before its command set")
        if self.refusal is None:
            if self._spool is not None:
                self._spool_fragment(context_id, payload)
            elif self.command_field != C_STORE_RQ:
                self._hold(payload)
        if not last:
            return False
        if self._spool is not None and self.refusal is None:
            outcome = self._spool.finish()
            if outcome is not None:
                self._refuse(outcome, self._spool.error)
        return True

    def _spool_fragment(self, context_id: int, payload: bytes | memoryview) -> None:
        assert self._spool is not None
        if context_id != self.context_id:
            reason = f"data set on presentation context {context_id}, command on {self.context_id}"
            self._refuse(StoreOutcome.WRONG_ENCODING, reason)
            return
        if self._explicit_vr and len(self._head) < 8:
            self._head += bytes(payload[: 8 - len(self._head)])
            if len(self._head) == 8 and _implicit_vr_element(self._head):
                reason = "implicit VR data set on an explicit VR presentation context"
                self._refuse(StoreOutcome.WRONG_ENCODING, reason)
                return
        outcome = self._spool.write(payload)
        if outcome is not None:
            self._refuse(outcome, self._spool.error)

    def _hold(self, payload: bytes | memoryview) -> None:
        limit = self._limits.max_other_dataset_bytes
        if len(self.buffer) + len(payload) <= limit:
            self.buffer += payload
            return
        if self.command_field & 0x8000:
            raise ProtocolError(f"response data set longer than {limit} bytes")
        self.buffer = bytearray()
        status = _RESOURCE_LIMITATION if self.command_field >= 0x0100 else OUT_OF_RESOURCES
        reason = f"data set longer than {limit} bytes (dicom.max_other_dataset_mb)"
        self.refusal = Refusal(status, reason)

    def _refuse(self, outcome: StoreOutcome, reason: str) -> None:
        self.discard()
        self.refusal = Refusal(STATUS_FOR_OUTCOME[outcome], reason, outcome)


def decode_command(encoded: bytes | bytearray) -> tuple[Dataset, int, bool]:
    """The command set, its Command Field and whether a data set follows; or ProtocolError."""
    try:
        command = decode(BytesIO(bytes(encoded)), True, True)
        field = int(command.CommandField)
        has_dataset = int(command.CommandDataSetType) != NO_DATASET
    except Exception as exc:  # whatever pydicom raises, the command is unusable
        raise ProtocolError(f"command set cannot be decoded: {exc}") from exc
    if field not in _MESSAGE_TYPES:
        raise ProtocolError(f"unrecognised command field 0x{field:04X}")
    return command, field, has_dataset


def response_to(request: Any, refusal: Refusal) -> Any:
    """The response primitive answering ``request`` with the refusal's status."""
    response = type(request)()
    response.MessageIDBeingRespondedTo = request.MessageID or 0
    for source, target in _RESPONSE_FIELDS:
        value = getattr(request, source, None)
        if value and getattr(response, target, None) is None:
            setattr(response, target, value)
    response.Status = refusal.status
    comment = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in refusal.reason)
    response.ErrorComment = comment[:64]  # LO: no backslash or control characters
    return response


def _explicit_vr(syntax: str) -> bool:
    """True when a data set in ``syntax`` must start with an explicit VR we can check."""
    try:
        uid = UID(syntax)
        return not uid.is_implicit_VR and not uid.is_deflated and syntax not in DEFLATED_SYNTAXES
    except ValueError:  # not a transfer syntax pydicom knows: nothing to check against
        return False


def _implicit_vr_element(head: bytes) -> bool:
    """True when a data set's first 8 bytes read as an implicit VR element, not an explicit one.

    No VR where an explicit element has one, and a 32-bit length below 64 KiB where an implicit
    element has its length (as a first element's is); anything else is left to the header parser.
    """
    return head[4:6] not in _VRS and head[6:8] == b"\0\0"


def _uid(value: object) -> str:
    return str(value or "").rstrip("\0 ")
