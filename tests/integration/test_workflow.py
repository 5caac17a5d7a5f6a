"""Workflow-aware completion: MPPS finishes studies; Storage Commitment confirms what we hold."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from tests.certs import CertificateAuthority
from tests.conftest import ListenerFactory
from tests.modality import (
    MPPS,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    ReportingAssociation,
    commitment_request,
    create_mpps,
    make_study,
    modality_association,
    mpps_end,
    mpps_in_progress,
    received_report,
    report_uids,
)
from tests.support import AmqpTopology, ListenerProcess, free_port, wait_for


def perform(listener: ListenerProcess, study: list[Dataset]) -> tuple[ReportingAssociation, str]:
    """Start an MPPS for the study and store its instances; return the association and MPPS."""
    association = modality_association(listener.port)
    mpps_uid = create_mpps(association, str(study[0].StudyInstanceUID))
    for dataset in study:
        assert association.send_c_store(dataset).Status == 0x0000
    return association, mpps_uid


def test_mpps_completed_publishes_within_seconds_despite_a_long_quiet_period(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """N-CREATE, C-STOREs, N-SET COMPLETED listing them: published at once, not after 600 s."""
    listener = start_listener(quiet_period=600)
    study = make_study(3, series=2)
    association, mpps_uid = perform(listener, study)

    started = time.monotonic()
    status, _ = association.send_n_set(mpps_end("COMPLETED", study), MPPS, mpps_uid)
    association.release()
    [message] = amqp.drain(1, timeout=10)
    elapsed = time.monotonic() - started

    assert status.Status == 0x0000
    assert elapsed < 3.0
    assert message.resource["numberOfInstances"] == 3
    assert message.resource["status"] == "available"
    assert message.properties.headers["completion_reason"] == "mpps-completed"
    ImagingStudy.model_validate(message.resource)


def test_missing_mpps_instances_are_published_after_the_grace_period_and_named(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """A listed instance that never arrives: published after the grace, a header names it."""
    listener = start_listener(quiet_period=0.3, LISTENER_AGGREGATOR__MPPS_GRACE_SECONDS="1.5")
    study = make_study(2, series=1)
    never_sent = generate_uid()
    association, mpps_uid = perform(listener, study)

    started = time.monotonic()
    association.send_n_set(mpps_end("COMPLETED", study, extra_uids=[never_sent]), MPPS, mpps_uid)
    association.release()
    [message] = amqp.drain(1, timeout=10)
    elapsed = time.monotonic() - started

    assert elapsed >= 1.3
    assert message.properties.headers["missing_instance_uids"] == [never_sent]
    assert message.resource["numberOfInstances"] == 2
    assert any(listener.events("study published without instances its MPPS listed"))


def test_discontinued_before_any_instance_publishes_a_cancelled_study(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """DISCONTINUED with no instances: a valid ImagingStudy with status cancelled, from the MPPS."""
    listener = start_listener(quiet_period=600)
    study_uid = generate_uid()
    association = modality_association(listener.port)
    mpps_uid = create_mpps(association, study_uid)

    status, _ = association.send_n_set(mpps_end("DISCONTINUED", []), MPPS, mpps_uid)
    association.release()
    [message] = amqp.drain(1, timeout=10)

    assert status.Status == 0x0000
    resource = message.resource
    assert (resource["id"], resource["status"]) == (study_uid, "cancelled")
    assert resource["subject"]["identifier"]["value"] == "P-42"
    assert resource["numberOfInstances"] == 0
    ImagingStudy.model_validate(resource)


def test_discontinued_after_instances_publishes_what_arrived_as_available(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """DISCONTINUED after some instances: the study is published at once, status available."""
    listener = start_listener(quiet_period=600)
    study = make_study(2, series=1)
    association, mpps_uid = perform(listener, study)

    association.send_n_set(mpps_end("DISCONTINUED", study[:1]), MPPS, mpps_uid)
    association.release()
    [message] = amqp.drain(1, timeout=10)

    assert message.resource["status"] == "available"
    assert message.resource["numberOfInstances"] == 2


def test_registered_study_on_in_progress_then_available_as_version_2(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """With publish_registered, IN PROGRESS publishes registered; the finished study is v2."""
    listener = start_listener(quiet_period=600, LISTENER_AGGREGATOR__PUBLISH_REGISTERED="true")
    study = make_study(2, series=1)
    association = modality_association(listener.port)
    mpps_uid = create_mpps(association, str(study[0].StudyInstanceUID))
    [registered] = amqp.drain(1, timeout=10)
    for dataset in study:
        association.send_c_store(dataset)
    association.send_n_set(mpps_end("COMPLETED", study), MPPS, mpps_uid)
    association.release()
    [available] = amqp.drain(1, timeout=10)

    assert (registered.resource["status"], registered.resource["meta"]["versionId"]) == (
        "registered",
        "1",
    )
    assert "series" not in registered.resource
    ImagingStudy.model_validate(registered.resource)
    assert (available.resource["status"], available.resource["meta"]["versionId"]) == (
        "available",
        "2",
    )


def test_mpps_requests_that_break_the_rules_get_the_standard_statuses(
    start_listener: ListenerFactory,
) -> None:
    """Each rule broken gets its standard status (0x0112, 0x0106, 0x0120, 0x0111, 0x0110)."""
    listener = start_listener()
    association = modality_association(listener.port)
    study_uid = generate_uid()

    unknown, _ = association.send_n_set(mpps_end("COMPLETED", []), MPPS, generate_uid())
    completed_at_create = mpps_in_progress(study_uid)
    completed_at_create.PerformedProcedureStepStatus = "COMPLETED"
    wrong_status, _ = association.send_n_create(completed_at_create, MPPS, generate_uid())
    no_modality = mpps_in_progress(study_uid)
    del no_modality.Modality
    missing, _ = association.send_n_create(no_modality, MPPS, generate_uid())
    mpps_uid = create_mpps(association, study_uid)
    duplicate, _ = association.send_n_create(mpps_in_progress(study_uid), MPPS, mpps_uid)
    bogus = Dataset()
    bogus.PerformedProcedureStepStatus = "PAUSED"
    invalid_value, _ = association.send_n_set(bogus, MPPS, mpps_uid)
    association.send_n_set(mpps_end("COMPLETED", []), MPPS, mpps_uid)
    after_end, _ = association.send_n_set(mpps_end("DISCONTINUED", []), MPPS, mpps_uid)
    association.release()

    assert unknown.Status == 0x0112
    assert wrong_status.Status == 0x0106
    assert missing.Status == 0x0120
    assert duplicate.Status == 0x0111
    assert invalid_value.Status == 0x0106
    assert after_end.Status == 0x0110


def test_storage_commitment_answers_on_the_same_association(
    start_listener: ListenerFactory,
) -> None:
    """Held instances are committed, an unknown one fails with 0x0112, on the same association."""
    listener = start_listener(quiet_period=600)
    study = make_study(2, series=1)
    unknown = generate_uid()
    association = modality_association(listener.port, commitment_role=True)
    for dataset in study:
        association.send_c_store(dataset)

    status, _ = association.send_n_action(
        commitment_request(study, [unknown]), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    wait_for(lambda: association.reports, timeout=10, what="the N-EVENT-REPORT")
    association.release()

    assert status.Status == 0x0000
    [(event_type, report)] = association.reports
    assert event_type == 2
    assert report_uids(report) == ({str(d.SOPInstanceUID) for d in study}, {unknown: 0x0112})


def test_storage_commitment_answers_on_the_same_association_with_default_roles(
    start_listener: ListenerFactory,
) -> None:
    """A requestor proposing no role selection, waiting on its association, gets the report."""
    listener = start_listener(quiet_period=600)  # and no dicom.remote_aes: nowhere else to go
    study = make_study(2, series=1)
    association = modality_association(listener.port, takes_reports=True)
    for dataset in study:
        association.send_c_store(dataset)

    status, _ = association.send_n_action(
        commitment_request(study, []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    wait_for(lambda: association.reports, timeout=10, what="the N-EVENT-REPORT")
    association.release()

    assert status.Status == 0x0000
    assert association.requestor.role_selection == {}
    [(event_type, report)] = association.reports
    assert event_type == 1
    assert report_uids(report) == ({str(d.SOPInstanceUID) for d in study}, {})


def test_a_store_right_after_the_commitment_request_is_answered_and_so_is_the_request(
    start_listener: ListenerFactory,
) -> None:
    """A C-STORE sent while the report is on its way is stored; the report still arrives."""
    listener = start_listener(quiet_period=600)
    first, *later = make_study(4, series=1)
    association = modality_association(listener.port, takes_reports=True)
    assert association.send_c_store(first).Status == 0x0000

    association.send_n_action(
        commitment_request([first], []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    statuses = [int(association.send_c_store(d).get("Status", -1)) for d in later]
    wait_for(lambda: association.reports, timeout=10, what="the N-EVENT-REPORT")
    association.release()

    assert statuses == [0x0000] * len(later)
    [(event_type, report)] = association.reports
    assert event_type == 1 and report_uids(report)[0] == {str(first.SOPInstanceUID)}


class CommitmentReceiver:
    """The modality's own SCP, receiving the commitment result on a new association."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.reports: list[tuple[int, Dataset]] = []
        self.peer_certificates: list[Any] = []
        self._ae = AE(ae_title="MODALITY")
        self._ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        server = self._ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_N_EVENT_REPORT, received_report(self.reports)),
                (evt.EVT_ESTABLISHED, self._note_peer),
            ],
            ssl_context=tls,
        )
        assert server is not None
        self._server = server

    def _note_peer(self, event: evt.Event) -> None:
        connection = event.assoc.dul.socket.socket  # type: ignore[union-attr]
        if isinstance(connection, ssl.SSLSocket):
            self.peer_certificates.append(connection.getpeercert())

    def close(self) -> None:
        self._server.shutdown()


def store_then_request_commitment(
    association: ReportingAssociation, study: list[Dataset], receiver: CommitmentReceiver
) -> float:
    """Store ``study``, ask for its commitment, release at once, wait for the receiver's report.

    Returns how long the release took.
    """
    for dataset in study:
        association.send_c_store(dataset)
    association.send_n_action(
        commitment_request(study, []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    started = time.monotonic()
    association.release()
    released_after = time.monotonic() - started
    wait_for(lambda: receiver.reports, timeout=20, what="the report on a new association")
    return released_after


def test_storage_commitment_answers_on_a_new_association_when_the_first_is_gone(
    start_listener: ListenerFactory,
) -> None:
    """A requestor that releases at once gets its result on an association we open to it."""
    receiver = CommitmentReceiver()
    try:
        listener = start_listener(
            quiet_period=600,
            LISTENER_DICOM__REMOTE_AES=json.dumps({"MODALITY": f"127.0.0.1:{receiver.port}"}),
        )
        study = make_study(2, series=1)
        association = modality_association(listener.port)
        released_after = store_then_request_commitment(association, study, receiver)
    finally:
        receiver.close()

    # The report tried on the released association does not hold the release (5 s reply wait).
    assert association.is_released
    assert released_after < 3.0
    [(event_type, report)] = receiver.reports
    assert event_type == 1
    assert report_uids(report) == ({str(d.SOPInstanceUID) for d in study}, {})


def test_storage_commitment_result_goes_over_tls_when_the_listener_uses_tls(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """With dicom.tls on, the new association to the requestor is TLS, with our certificate."""
    ca = CertificateAuthority(tmp_path)
    ours = ca.issue("listener", server=True, client=True)
    theirs = ca.issue("modality", server=True, client=True)
    receiver_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.pem.cert))
    receiver_tls.load_cert_chain(str(theirs.cert), str(theirs.key))
    receiver_tls.verify_mode = ssl.CERT_REQUIRED  # plain TCP or no certificate: refused
    receiver = CommitmentReceiver(tls=receiver_tls)
    try:
        listener = start_listener(
            quiet_period=600,
            LISTENER_DICOM__TLS__CERT_FILE=str(ours.cert),
            LISTENER_DICOM__TLS__KEY_FILE=str(ours.key),
            LISTENER_DICOM__TLS__CA_FILE=str(ca.pem.cert),
            LISTENER_DICOM__REMOTE_AES=json.dumps({"MODALITY": f"127.0.0.1:{receiver.port}"}),
        )
        study = make_study(1, series=1)
        client_tls = ssl.create_default_context(cafile=str(ca.pem.cert))
        client_tls.load_cert_chain(str(theirs.cert), str(theirs.key))
        association = modality_association(listener.port, tls=client_tls)
        store_then_request_commitment(association, study, receiver)
    finally:
        receiver.close()

    [(event_type, report)] = receiver.reports
    assert event_type == 1 and report_uids(report)[0] == {str(study[0].SOPInstanceUID)}
    [certificate] = receiver.peer_certificates
    assert ("commonName", "listener") in [name for rdn in certificate["subject"] for name in rdn]


def test_storage_commitment_after_a_restart_commits_what_was_stored_before(
    start_listener: ListenerFactory,
) -> None:
    """Instances stored before a restart are committed when asked after it."""
    first = start_listener(quiet_period=600)
    study = make_study(3, series=1)
    association = modality_association(first.port)
    for dataset in study:
        association.send_c_store(dataset)
    association.release()
    assert first.stop() == 0
    second = start_listener(quiet_period=600, data_dir=first.data_dir)

    association = modality_association(second.port, commitment_role=True)
    association.send_n_action(
        commitment_request(study, []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    wait_for(lambda: association.reports, timeout=10, what="the N-EVENT-REPORT")
    association.release()

    [(event_type, report)] = association.reports
    assert event_type == 1
    assert report_uids(report)[0] == {str(d.SOPInstanceUID) for d in study}
