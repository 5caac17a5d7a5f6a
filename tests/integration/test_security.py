"""Safe on a hospital network: access control, DICOM TLS, AMQP TLS, limits, secrets."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pydicom
from pynetdicom import AE

from tests.certs import CertificateAuthority
from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, Modality, make_study
from tests.support import (
    RABBITMQ_URL,
    AmqpTopology,
    ListenerProcess,
    TcpProxy,
    http_get,
    metric_value,
    spool_leftovers,
    wait_for,
)

VERIFICATION = "1.2.840.10008.1.1"


def associate(
    listener: ListenerProcess,
    *,
    calling_ae: str = "MODALITY",
    called_ae: str = "DICOM-LISTENER",
    tls: ssl.SSLContext | None = None,
) -> object:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
    return ae.associate(
        "127.0.0.1",
        listener.port,
        ae_title=called_ae,
        tls_args=(tls, "localhost") if tls is not None else None,
    )


def rejection(association: object) -> tuple[int, int, int]:
    """(result, source, diagnostic) of an A-ASSOCIATE-RJ."""
    primitive = association.acceptor.primitive  # type: ignore[attr-defined]
    assert primitive is not None, (
        f"no A-ASSOCIATE-RJ received: rejected={association.is_rejected}"  # type: ignore[attr-defined]
        f" aborted={association.is_aborted}"  # type: ignore[attr-defined]
    )
    return primitive.result, primitive.result_source, primitive.diagnostic


def test_calling_ae_outside_the_allow_list_is_rejected_logged_and_counted(
    start_listener: ListenerFactory,
) -> None:
    """Only allowed calling AE titles associate; others get a permanent rejection (0x03)."""
    listener = start_listener(LISTENER_DICOM__ALLOWED_CALLING_AE_TITLES='["CT1", "MR2"]')

    allowed = associate(listener, calling_ae="CT1")
    refused = associate(listener, calling_ae="INTRUDER")

    assert allowed.is_established  # type: ignore[attr-defined]
    allowed.release()  # type: ignore[attr-defined]
    assert not refused.is_established  # type: ignore[attr-defined]
    assert rejection(refused) == (0x01, 0x01, 0x03)
    wait_for(lambda: any(listener.events("association rejected")), timeout=5, what="a log line")
    [line] = listener.events("association rejected")
    assert line["calling_ae"] == "INTRUDER" and line["peer"].startswith("127.0.0.1:")
    _, metrics = http_get(f"{listener.metrics_url}/metrics")
    assert metric_value(metrics, "dicom_listener_associations_total", 'outcome="rejected"') == 1


def test_wrong_called_ae_title_is_rejected(start_listener: ListenerFactory) -> None:
    """A request addressed to another AE title is rejected (called AE not recognised, 0x07)."""
    listener = start_listener()

    refused = associate(listener, called_ae="SOMEONE-ELSE")

    assert not refused.is_established  # type: ignore[attr-defined]
    assert rejection(refused) == (0x01, 0x01, 0x07)


def test_ae_bound_to_addresses_is_rejected_from_elsewhere(start_listener: ListenerFactory) -> None:
    """An AE listed in dicom.peer_addresses may connect only from its addresses."""
    listener = start_listener(
        LISTENER_DICOM__PEER_ADDRESSES='["CT1@10.20.30.40", "MR2@127.0.0.0/8"]'
    )

    ct1 = associate(listener, calling_ae="CT1")
    mr2 = associate(listener, calling_ae="MR2")
    other = associate(listener, calling_ae="US3")

    assert not ct1.is_established  # type: ignore[attr-defined]
    assert rejection(ct1) == (0x01, 0x01, 0x03)
    assert mr2.is_established and other.is_established  # type: ignore[attr-defined]
    mr2.release()  # type: ignore[attr-defined]
    other.release()  # type: ignore[attr-defined]


def tls_listener(
    start_listener: ListenerFactory, tmp_path: Path, *, mutual: bool, **env: str
) -> tuple[ListenerProcess, CertificateAuthority]:
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("listener", server=True)
    settings = {
        "LISTENER_DICOM__TLS__CERT_FILE": str(server.cert),
        "LISTENER_DICOM__TLS__KEY_FILE": str(server.key),
        **env,
    }
    if mutual:
        settings["LISTENER_DICOM__TLS__CA_FILE"] = str(ca.pem.cert)
    return start_listener(**settings), ca


def client_context(ca: CertificateAuthority, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.pem.cert))
    if with_certificate:
        client = ca.issue("modality", server=False)
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def test_echo_and_store_over_tls_and_plain_connections_refused(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """With TLS on, C-ECHO and C-STORE work over TLS and a plain association is refused."""
    listener, ca = tls_listener(start_listener, tmp_path, mutual=False)
    [dataset] = make_study(1, series=1)

    secure = associate(listener, tls=client_context(ca, with_certificate=False))
    assert secure.is_established  # type: ignore[attr-defined]
    assert secure.send_c_echo().Status == 0x0000  # type: ignore[attr-defined]
    assert secure.send_c_store(dataset).Status == 0x0000  # type: ignore[attr-defined]
    secure.release()  # type: ignore[attr-defined]
    plain = associate(listener)

    assert not plain.is_established  # type: ignore[attr-defined]
    [message] = amqp.drain(1, timeout=20)
    assert message.resource["id"] == dataset.StudyInstanceUID


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """With dicom.tls.ca_file, a client without a certificate (or a foreign one) is refused."""
    listener, ca = tls_listener(start_listener, tmp_path, mutual=True)
    (tmp_path / "other").mkdir()
    stranger = CertificateAuthority(tmp_path / "other", "Other CA")
    foreign = ssl.create_default_context(cafile=str(ca.pem.cert))
    foreign_pem = stranger.issue("rogue", server=False)
    foreign.load_cert_chain(str(foreign_pem.cert), str(foreign_pem.key))

    with_certificate = associate(listener, tls=client_context(ca, with_certificate=True))
    without = associate(listener, tls=client_context(ca, with_certificate=False))
    rogue = associate(listener, tls=foreign)

    assert with_certificate.is_established  # type: ignore[attr-defined]
    with_certificate.release()  # type: ignore[attr-defined]
    assert not without.is_established  # type: ignore[attr-defined]
    assert not rogue.is_established  # type: ignore[attr-defined]
    reasons = [line["reason"] for line in listener.events("connection refused before association")]
    assert any(reason.startswith("TLS handshake failed") for reason in reasons)


def test_stalled_tls_client_does_not_block_new_associations(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """A peer that connects and never starts its TLS handshake does not delay anyone else."""
    listener, ca = tls_listener(start_listener, tmp_path, mutual=False)
    stalled = [socket.create_connection(("127.0.0.1", listener.port)) for _ in range(3)]
    try:
        started = time.monotonic()
        association = associate(listener, tls=client_context(ca, with_certificate=False))
        elapsed = time.monotonic() - started
        assert association.is_established  # type: ignore[attr-defined]
        association.release()  # type: ignore[attr-defined]
        assert elapsed < 3.0
    finally:
        for connection in stalled:
            connection.close()


def test_echo_command_speaks_tls_to_a_tls_listener(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """``dicom-listener echo`` uses the [dicom.tls] files and succeeds against mutual TLS."""
    ca = CertificateAuthority(tmp_path)
    server = ca.issue("listener", server=True, client=True)
    listener = start_listener(
        LISTENER_DICOM__TLS__CERT_FILE=str(server.cert),
        LISTENER_DICOM__TLS__KEY_FILE=str(server.key),
        LISTENER_DICOM__TLS__CA_FILE=str(ca.pem.cert),
    )

    result = listener.cli("echo")

    assert result.returncode == 0, result.stderr
    assert "status 0x0000" in result.stdout


def test_instance_over_the_size_limit_is_refused_and_removed(
    start_listener: ListenerFactory,
) -> None:
    """An instance larger than dicom.max_instance_mb gets 0xA701 and leaves no spool file."""
    listener = start_listener(LISTENER_DICOM__MAX_INSTANCE_MB="1")
    [dataset] = make_study(1, series=1)
    dataset.Rows, dataset.Columns = 1024, 1024
    dataset.PixelData = b"\x00\x01" * (1024 * 1024)
    association = associate(listener)

    status = association.send_c_store(dataset)  # type: ignore[attr-defined]
    association.release()  # type: ignore[attr-defined]

    assert status.Status == 0xA701
    assert spool_leftovers(listener.data_dir / "spool") == []
    assert not list((listener.data_dir).glob("instances/**/*.dcm"))


def test_patient_data_reaches_debug_lines_only_when_allowed(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """PatientName never appears at INFO; with logging.include_phi it appears at DEBUG only."""
    study = make_study(2, series=1)
    for dataset in study:
        dataset.PatientName = "Secret^Patient"
    quiet = start_listener(LISTENER_LOGGING__LEVEL="DEBUG")
    Modality(quiet.port).send_all(study)
    amqp.drain(1, timeout=20)
    assert quiet.stop() == 0
    assert "Secret" not in quiet.log_path.read_text()

    study = make_study(2, series=1)
    for dataset in study:
        dataset.PatientName = "Secret^Patient"
    verbose = start_listener(LISTENER_LOGGING__LEVEL="DEBUG", LISTENER_LOGGING__INCLUDE_PHI="true")
    Modality(verbose.port).send_all(study)
    amqp.drain(1, timeout=20)

    lines_with_phi = [line for line in verbose.logs() if "Secret" in str(line)]
    assert lines_with_phi
    assert {line["level"] for line in lines_with_phi} == {"debug"}


def test_broker_password_from_a_file_is_used_and_never_printed(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """amqp.password_file supplies the password; logs and check-config never show it."""
    password_file = tmp_path / "broker-password"
    password_file.write_text("guest\n")
    url = RABBITMQ_URL.replace("guest:guest@", "guest@")
    listener = start_listener(
        LISTENER_AMQP__URL=url, LISTENER_AMQP__PASSWORD_FILE=str(password_file)
    )
    study = make_study(1, series=1)

    Modality(listener.port).send_all(study)

    [message] = amqp.drain(1, timeout=20)
    assert message.resource["id"] == study[0].StudyInstanceUID
    check = listener.cli("check-config")
    assert "amqp.password_file" in check.stdout
    assert ":guest@" not in listener.log_path.read_text()


def test_amqps_with_a_private_ca_publishes_and_an_unknown_ca_does_not(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """amqps:// verifies the broker with amqp.tls.ca_file; an unverifiable broker gets nothing."""
    ca = CertificateAuthority(tmp_path)
    broker_pem = ca.issue("localhost", server=True)
    broker_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    broker_tls.load_cert_chain(str(broker_pem.cert), str(broker_pem.key))
    terminator = TcpProxy("127.0.0.1", 5672, tls=broker_tls)
    try:
        url = f"amqps://guest:guest@localhost:{terminator.port}/%2F"
        other_ca = tmp_path / "other"
        other_ca.mkdir()
        untrusted = start_listener(
            LISTENER_AMQP__URL=url,
            LISTENER_AMQP__TLS__CA_FILE=str(CertificateAuthority(other_ca, "Other").pem.cert),
        )
        time.sleep(2)
        metrics = http_get(f"{untrusted.metrics_url}/metrics")[1]
        assert metric_value(metrics, "dicom_listener_broker_connected") == 0
        assert metric_value(metrics, "dicom_listener_studies_published_total") == 0
        assert untrusted.stop() == 0

        trusted = start_listener(
            LISTENER_AMQP__URL=url, LISTENER_AMQP__TLS__CA_FILE=str(ca.pem.cert)
        )
        study = make_study(1, series=1)
        Modality(trusted.port).send_all(study)
        [message] = amqp.drain(1, timeout=20)
        assert message.resource["id"] == study[0].StudyInstanceUID
    finally:
        terminator.close()


def test_tls_certificate_without_its_key_names_the_missing_key(
    start_listener: ListenerFactory,
) -> None:
    """A TLS certificate without its key stops start-up with status 2 naming the missing key."""
    listener = start_listener()
    listener.env["LISTENER_DICOM__TLS__CERT_FILE"] = str(Path(pydicom.__file__))

    result = listener.cli("check-config")

    assert result.returncode == 2
    assert "dicom.tls.key_file" in result.stderr
