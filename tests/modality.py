"""A pynetdicom modality for tests: generated studies and a sender that retries like a real one."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

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
class Modality:
    """Sends datasets one C-STORE at a time; on failure reconnects and retries the same instance.

    ``acked`` holds the SOP Instance UIDs that got 0x0000: the ones the listener promised to keep.
    """

    port: int
    ae_title: str = "MODALITY"
    acked: list[str] = field(default_factory=list)
    pause_after: int | None = None
    pause_seconds: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    _association: Association | None = None

    def _associate(self) -> Association | None:
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        association = ae.associate("127.0.0.1", self.port, ae_title="DICOM-LISTENER")
        return association if association.is_established else None

    def send_all(self, datasets: list[Dataset]) -> None:
        """Send every dataset until each is acknowledged (or ``stop`` is set)."""
        for index, dataset in enumerate(datasets):
            if self.pause_after is not None and index == self.pause_after:
                self._release()
                time.sleep(self.pause_seconds)
            while not self.stop.is_set() and not self._send(dataset):
                self._association = None
                time.sleep(0.1)
        self._release()

    def _send(self, dataset: Dataset) -> bool:
        if self._association is None or not self._association.is_established:
            self._association = self._associate()
            if self._association is None:
                return False
        try:
            status = self._association.send_c_store(dataset)
        except (RuntimeError, OSError):
            return False
        if status and status.Status == 0x0000:
            self.acked.append(str(dataset.SOPInstanceUID))
            return True
        return False

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
