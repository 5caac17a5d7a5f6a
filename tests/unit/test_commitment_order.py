"""A Storage Commitment report on the requesting association never overtakes the N-ACTION reply."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import N_ACTION

from tests.modality import (
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    commitment_request,
    make_study,
    modality_association,
    report_uids,
)
from tests.support import free_port, wait_for
from tests.unit.test_service import FakeClock, FakePublisher, make_service

RESPONSE_DELAY = 0.5


def test_report_waits_for_a_late_n_action_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when pynetdicom sends the N-ACTION response late, the report comes after it."""
    original_send_msg = DIMSEServiceProvider.send_msg

    def late_action_responses(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, N_ACTION) and primitive.MessageIDBeingRespondedTo is not None:
            time.sleep(RESPONSE_DELAY)  # the reactor is slow after the handler returned
        original_send_msg(self, primitive, context_id)

    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", late_action_responses)
    port = free_port()
    service = make_service(tmp_path, FakePublisher(), FakeClock(), LISTENER_DICOM__PORT=str(port))
    service.start()
    received: list[str] = []

    def note(event: evt.Event) -> None:
        received.append(type(event.message).__name__)

    try:
        association = modality_association(
            port, commitment_role=True, observers=[(evt.EVT_DIMSE_RECV, note)]
        )
        [dataset] = make_study(1, series=1)
        assert association.send_c_store(dataset).Status == 0x0000
        status, _ = association.send_n_action(
            commitment_request([dataset], []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        wait_for(lambda: association.reports, timeout=10, what="the N-EVENT-REPORT")
        association.release()
    finally:
        service.stop(grace_seconds=1)

    assert status.Status == 0x0000
    assert received[-2:] == ["N_ACTION_RSP", "N_EVENT_REPORT_RQ"]
    [(event_type, report)] = association.reports
    assert event_type == 1 and report_uids(report)[0] == {str(dataset.SOPInstanceUID)}
