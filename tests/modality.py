"""A pynetdicom modality for tests: generated studies and a sender that retries like a real one."""

from __future__ import annotations

import copy
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT

from tests.support import PYDICOM_TEST_FILES

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def make_study(instances: int, *, series: int = 2) -> list[Dataset]:
    """A CT study of ``instances`` instances over ``series`` series, with fresh UIDs."""
    template = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    datasets: list[Dataset] = []
    for index in range(instances):
        dataset = copy.deepcopy(template)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uids[index % series]
        dataset.SeriesNumber = index % series + 1
        dataset.SOPInstanceUID = generate_uid()
        dataset.InstanceNumber = index // series + 1
        datasets.append(dataset)
    return datasets


@dataclass
class Attempt:
    """One C-STORE tried: its instance, its status (None: no answer), when sent and answered."""

    sop_instance_uid: str
    status: int | None
    sent: float  # time.monotonic()
    answered: float


@dataclass
class Modality:
    """Sends datasets one C-STORE at a time; on failure reconnects and retries the same instance.

    ``acked`` holds the SOP Instance UIDs that got 0x0000: the ones the listener promised to keep;
    ``attempts`` every C-STORE tried, in order. With ``per_association`` it opens a new
    association after that many acknowledgements (as a modality sending series by series), and
    with ``pace_seconds`` it waits that long between C-STOREs (a slow modality).
    """

    port: int
    ae_title: str = "MODALITY"
    acked: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    pause_after: int | None = None
    pause_seconds: float = 0.0
    per_association: int = 0  # 0 = one association for everything
    pace_seconds: float = 0.0
    timeout_seconds: float = 5.0  # ACSE, DIMSE and network timeouts
    stop: threading.Event = field(default_factory=threading.Event)
    _association: Association | None = None
    _acked_here: int = 0  # acknowledgements on the current association

    def _associate(self) -> Association | None:
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_seconds
        association = ae.associate("127.0.0.1", self.port, ae_title="DICOM-LISTENER")
        self._acked_here = 0
        return association if association.is_established else None

    def send_all(self, datasets: list[Dataset]) -> None:
        """Send every dataset until each is acknowledged (or ``stop`` is set)."""
        for index, dataset in enumerate(datasets):
            if self.pause_after is not None and index == self.pause_after:
                self._release()
                time.sleep(self.pause_seconds)
            elif self.per_association and self._acked_here >= self.per_association:
                self._release()
            while not self.stop.is_set() and not self._send(dataset):
                self._abandon()
                time.sleep(0.1)
            time.sleep(self.pace_seconds)
        self._release()

    def _send(self, dataset: Dataset) -> bool:
        if self._association is None or not self._association.is_established:
            self._association = self._associate()
            if self._association is None:
                return False
        uid, sent = str(dataset.SOPInstanceUID), time.monotonic()
        try:
            response = self._association.send_c_store(dataset)
        except (RuntimeError, OSError):
            response = None
        status = int(response.Status) if response and "Status" in response else None
        self.attempts.append(Attempt(uid, status, sent, time.monotonic()))
        if status == 0x0000:
            self.acked.append(uid)
            self._acked_here += 1
            return True
        return False

    def _abandon(self) -> None:
        """Give up the current association (after a failure): abort it, as a modality would."""
        association, self._association = self._association, None
        if association is not None and association.is_established:
            association.abort()

    def _release(self) -> None:
        if self._association is not None and self._association.is_established:
            self._association.release()
        self._association = None

    def start(self, datasets: list[Dataset]) -> threading.Thread:
        """Send in a background thread."""
        thread = threading.Thread(target=self.send_all, args=(datasets,), daemon=True)
        thread.start()
        return thread


MPPS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def mpps_in_progress(study_uid: str, *, patient_id: str = "P-42") -> Dataset:
    """An N-CREATE attribute list for an MPPS of ``study_uid`` (IN PROGRESS)."""
    scheduled = Dataset()
    scheduled.StudyInstanceUID = study_uid
    scheduled.AccessionNumber = "ACC-77"
    scheduled.RequestedProcedureID = "RP-1"
    scheduled.ScheduledProcedureStepID = "SPS-1"
    dataset = Dataset()
    dataset.ScheduledStepAttributesSequence = [scheduled]
    dataset.PatientID = patient_id
    dataset.PatientName = "Doe^Jane"
    dataset.PerformedProcedureStepID = "PPS-1"
    dataset.PerformedStationAETitle = "MODALITY"
    dataset.PerformedProcedureStepStartDate = "20261127"
    dataset.PerformedProcedureStepStartTime = "101500"
    dataset.PerformedProcedureStepStatus = "IN PROGRESS"
    dataset.PerformedProcedureStepDescription = "CT chest"
    dataset.Modality = "CT"
    dataset.PerformedSeriesSequence = []
    return dataset


def mpps_end(
    status: str, datasets: list[Dataset], *, extra_uids: list[str] | None = None
) -> Dataset:
    """An N-SET modification list ending the step, listing ``datasets`` (plus ``extra_uids``)."""
    modification = Dataset()
    modification.PerformedProcedureStepStatus = status
    modification.PerformedProcedureStepEndDate = "20261127"
    modification.PerformedProcedureStepEndTime = "103000"
    by_series: dict[str, list[Dataset]] = {}
    for dataset in datasets:
        by_series.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    series_items = []
    for index, (series_uid, members) in enumerate(sorted(by_series.items())):
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.Modality = "CT"
        item.PerformingPhysicianName = ""
        item.ProtocolName = "Chest"
        item.OperatorsName = ""
        item.RetrieveAETitle = ""
        item.SeriesDescription = ""
        references = []
        uids = [str(d.SOPInstanceUID) for d in members]
        if index == 0:
            uids += extra_uids or []
        for uid in uids:
            reference = Dataset()
            reference.ReferencedSOPClassUID = CT_IMAGE_STORAGE
            reference.ReferencedSOPInstanceUID = uid
            references.append(reference)
        item.ReferencedImageSequence = references
        series_items.append(item)
    modification.PerformedSeriesSequence = series_items
    return modification


# -- MPPS and Storage Commitment over one association ------------------------------------------


class ReportingAssociation:
    """An association plus the commitment reports received on it."""

    def __init__(self, association: Any, reports: list[tuple[int, Dataset]]) -> None:
        self.association = association
        self.reports = reports

    def __getattr__(self, name: str) -> Any:
        return getattr(self.association, name)


def received_report(reports: list[tuple[int, Dataset]]) -> Any:
    """An EVT_N_EVENT_REPORT handler that records (event type, event information)."""

    def on_report(event: evt.Event) -> tuple[int, None]:
        request = event.request
        assert isinstance(request, N_EVENT_REPORT)
        reports.append((int(request.EventTypeID or 0), event.event_information))
        return 0x0000, None

    return on_report


def modality_association(
    port: int,
    *,
    commitment_role: bool = False,
    takes_reports: bool = False,
    tls: ssl.SSLContext | None = None,
    observers: list[Any] | None = None,
) -> ReportingAssociation:
    """A modality's association to the listener on ``port`` (plus ``observers`` handlers).

    ``commitment_role`` proposes the SCP role for Storage Commitment; with it or ``takes_reports``
    the association answers commitment reports (N-EVENT-REPORT) and records them.
    """
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    ae.add_requested_context(MPPS)
    ae.add_requested_context(STORAGE_COMMITMENT)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    reports: list[tuple[int, Dataset]] = []
    roles: list[Any] = []
    handlers: list[Any] = list(observers or [])
    if commitment_role:
        roles = [build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=True)]
    if commitment_role or takes_reports:
        handlers.append((evt.EVT_N_EVENT_REPORT, received_report(reports)))
    association = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DICOM-LISTENER",
        ext_neg=roles,
        evt_handlers=handlers,
        tls_args=(tls, "localhost") if tls is not None else None,
    )
    assert association.is_established
    return ReportingAssociation(association, reports)


def create_mpps(association: ReportingAssociation, study_uid: str) -> str:
    """N-CREATE an MPPS (IN PROGRESS) for ``study_uid``; return its SOP Instance UID."""
    uid = generate_uid()
    status, _ = association.send_n_create(mpps_in_progress(study_uid), MPPS, uid)
    assert status.Status == 0x0000
    return uid


def commitment_request(datasets: list[Dataset], extra_uids: list[str]) -> Dataset:
    """A Storage Commitment N-ACTION request for ``datasets`` plus ``extra_uids``."""
    request = Dataset()
    request.TransactionUID = generate_uid()
    references = []
    for uid in [str(d.SOPInstanceUID) for d in datasets] + extra_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uid
        references.append(item)
    request.ReferencedSOPSequence = references
    return request


def report_uids(report: Dataset) -> tuple[set[str], dict[str, int]]:
    """A commitment report's committed UIDs and its failed UIDs with their reasons."""
    committed = {str(i.ReferencedSOPInstanceUID) for i in report.get("ReferencedSOPSequence", [])}
    failed = {
        str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
        for i in report.get("FailedSOPSequence", [])
    }
    return committed, failed
