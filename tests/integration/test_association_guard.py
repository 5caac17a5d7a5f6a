"""Before an association: bogus, broken, silent or idle peers take no slot a modality needs.

Attackers connect from 127.0.0.2 (all of 127/8 is loopback), real modalities from 127.0.0.1, so
the per-address caps can tell them apart as they would tell two hosts apart.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from tests.association_requests import (
    CT_IMAGE_STORAGE,
    EXPLICIT_LITTLE,
    VERIFICATION,
    absurd_request_header,
    association_request,
    connect_from,
    read_pdu,
    rejection_of,
    threads_and_descriptors,
)
from tests.conftest import ListenerFactory
from tests.modality import make_study
from tests.support import AmqpTopology, ListenerProcess, http_get, metric_value, wait_for

ATTACKER = "127.0.0.2"
MALFORMED = (0x01, 0x02, 0x01)  # permanent, UL service provider (ACSE), no reason given
LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, UL service provider (presentation), local limit


def associate(port: int, *, source: str = "127.0.0.1", echo: bool = False) -> Association:
    """A pynetdicom association from ``source`` proposing Verification and CT storage."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION.decode())
    ae.add_requested_context(CT_IMAGE_STORAGE.decode(), EXPLICIT_LITTLE.decode())
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    association = ae.associate(
        "127.0.0.1", port, ae_title="DICOM-LISTENER", bind_address=(source, 0)
    )
    if echo and association.is_established:
        assert association.send_c_echo().Status == 0x0000
    return association


def raw_attempt(port: int, source: str) -> tuple[int, int, int] | None:
    """(result, source, reason) of the A-ASSOCIATE-RJ a raw request receives, None if accepted."""
    request = association_request(
        [(VERIFICATION, [EXPLICIT_LITTLE]), (CT_IMAGE_STORAGE, [EXPLICIT_LITTLE])],
        calling_ae=b"MODALITY",
    )
    with contextlib.closing(connect_from(source, port)) as connection:
        connection.sendall(request)
        return rejection_of(connection)


def seconds_to_associate(listener: ListenerProcess) -> float:
    """How long a real modality (127.0.0.1) takes to get an association accepted."""
    started = time.monotonic()
    association = associate(listener.port)
    elapsed = time.monotonic() - started
    assert association.is_established, "the real modality was not accepted"
    association.release()
    return elapsed


def send_study_and_check_published(listener: ListenerProcess, amqp: AmqpTopology) -> None:
    """One association, every instance acknowledged, the study published."""
    study = make_study(4, series=1)
    association = associate(listener.port)
    assert association.is_established
    statuses = [association.send_c_store(dataset).Status for dataset in study]
    association.release()
    assert statuses == [0x0000] * len(study)
    [message] = amqp.drain(1, timeout=20)
    assert message.resource["id"] == study[0].StudyInstanceUID


@contextlib.contextmanager
def held(connections: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """Keep the attacker's connections open for the block, close them afterwards."""
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def test_bogus_requests_take_no_association_slot(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """50 requests announcing absurd or never-sent lengths, and a modality associates within 1 s."""
    listener = start_listener(
        LISTENER_DICOM__MAX_ASSOCIATIONS="4", LISTENER_DICOM__ACSE_TIMEOUT_SECONDS="5"
    )
    connections = []
    for index in range(50):
        connection = connect_from(ATTACKER, listener.port)
        # Half announce gigabytes; half announce a plausible 2000 bytes and never send them.
        connection.sendall(absurd_request_header(0xFFFFFFF0 if index % 2 else 2000))
        connections.append(connection)

    with held(connections):
        assert seconds_to_associate(listener) < 1.0
        send_study_and_check_published(listener, amqp)


def test_study_is_acknowledged_while_bogus_requests_arrive(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """With bogus requests arriving at 20/s, every instance of a study sent meanwhile is acked."""
    listener = start_listener(
        LISTENER_DICOM__MAX_ASSOCIATIONS="2", LISTENER_DICOM__ACSE_TIMEOUT_SECONDS="5"
    )
    stop = threading.Event()
    sent: list[socket.socket] = []

    def attack() -> None:
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):
                connection = connect_from(ATTACKER, listener.port)
                connection.sendall(absurd_request_header())
                sent.append(connection)

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    try:
        wait_for(lambda: len(sent) >= 20, timeout=5, what="a second of bogus requests")
        send_study_and_check_published(listener, amqp)
    finally:
        stop.set()
        attacker.join(timeout=5)
        for connection in sent:
            connection.close()
    assert len(sent) >= 20


def test_context_without_transfer_syntax_is_rejected_and_leaks_nothing(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """100 such requests each get an A-ASSOCIATE-RJ; threads and descriptors return at once."""
    listener = start_listener()
    assert listener.process is not None
    pid = listener.process.pid
    send_study_and_check_published(listener, amqp)
    baseline = threads_and_descriptors(pid)
    request = association_request([(CT_IMAGE_STORAGE, [])])
    rejections, connections = [], []
    for _ in range(100):
        connection = connect_from(ATTACKER, listener.port)
        connection.sendall(request)
        rejections.append(rejection_of(connection))
        connections.append(connection)  # the peer keeps its end open

    with held(connections):
        assert rejections == [MALFORMED] * 100
        wait_for(
            lambda: all(
                now <= then + 2
                for now, then in zip(threads_and_descriptors(pid), baseline, strict=True)
            ),
            timeout=3,
            what=f"threads/descriptors back to {baseline}",
        )
        send_study_and_check_published(listener, amqp)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(association_request(user_information=False), id="no user information"),
        pytest.param(association_request(max_pdu=None), id="no maximum length"),
        pytest.param(association_request(max_pdu=1), id="maximum PDU 1"),
        pytest.param(association_request([(None, [EXPLICIT_LITTLE])]), id="no abstract syntax"),
        pytest.param(association_request([]), id="no presentation context"),
    ],
)
def test_unusable_request_is_rejected_at_association_time(
    start_listener: ListenerFactory, amqp: AmqpTopology, request_bytes: bytes
) -> None:
    """A request pynetdicom would accept and then fail on is rejected with A-ASSOCIATE-RJ."""
    listener = start_listener()
    with held([connect_from("127.0.0.1", listener.port)]) as [connection]:
        connection.sendall(request_bytes)

        assert rejection_of(connection) == MALFORMED
    [line] = wait_for(
        lambda: list(listener.events("connection refused before association")),
        timeout=5,
        what="the refusal's log line",
    )
    assert line["reason"].startswith("invalid association request: ")
    send_study_and_check_published(listener, amqp)


def test_sound_hand_made_request_is_accepted(start_listener: ListenerFactory) -> None:
    """The hand-made request the rejection tests break is itself accepted (A-ASSOCIATE-AC)."""
    listener = start_listener()
    with held([connect_from("127.0.0.1", listener.port)]) as [connection]:
        connection.sendall(association_request(max_pdu=1024))

        assert read_pdu(connection)[0] == 0x02


def test_idle_associations_from_one_address_leave_room_for_others(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """16 silent associations from one address: 8 are accepted, 8 rejected; others get in."""
    listener = start_listener(LISTENER_DICOM__IDLE_TIMEOUT_SECONDS="60")
    accepted = [associate(listener.port, source=ATTACKER, echo=True) for _ in range(8)]
    try:
        assert all(association.is_established for association in accepted)
        # The other 8 as raw requests: pynetdicom's requestor reports about 1 in 100 prompt
        # rejections as an abort (its ACSE checks the connection after its DUL thread has read
        # the A-ASSOCIATE-RJ and closed it), which made this test flaky.
        assert [raw_attempt(listener.port, ATTACKER) for _ in range(8)] == [LOCAL_LIMIT] * 8
        assert seconds_to_associate(listener) < 1.0
        send_study_and_check_published(listener, amqp)
    finally:
        for association in accepted:
            if association.is_established:
                association.abort()


def test_association_without_dimse_is_aborted_after_the_shorter_idle_limit(
    start_listener: ListenerFactory,
) -> None:
    """Silent from the start: aborted after idle_timeout_before_dimse; after a C-ECHO: kept."""
    listener = start_listener(
        LISTENER_DICOM__IDLE_TIMEOUT_SECONDS="30",
        LISTENER_DICOM__IDLE_TIMEOUT_BEFORE_DIMSE_SECONDS="1",
    )
    silent = associate(listener.port)
    talked = associate(listener.port, echo=True)
    started = time.monotonic()
    try:
        wait_for(lambda: silent.is_aborted, timeout=4, what="the silent association's abort")
        assert time.monotonic() - started < 3.0
        time.sleep(1.5)  # past the shorter limit: the association that spoke must still be up
        assert talked.is_established
        assert talked.send_c_echo().Status == 0x0000
    finally:
        talked.release()


def test_silent_connections_from_one_address_do_not_shut_the_door(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """64 silent TCP connections from one address: a modality elsewhere associates within 1 s."""
    listener = start_listener(LISTENER_DICOM__ACSE_TIMEOUT_SECONDS="10")
    with held([connect_from(ATTACKER, listener.port) for _ in range(64)]):
        assert seconds_to_associate(listener) < 1.0
        send_study_and_check_published(listener, amqp)


def test_a_burst_of_connections_is_queued_not_dropped(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """200 connects at once from 20 addresses all complete within a second (listen backlog)."""
    listener = start_listener()
    sources = [f"127.0.1.{index}" for index in range(1, 21)]
    results: list[float] = []
    lock = threading.Lock()

    def connect(source: str) -> None:
        started = time.monotonic()
        try:
            connection = connect_from(source, listener.port, timeout=3)
        except OSError:
            elapsed = float("inf")
        else:
            elapsed = time.monotonic() - started
            connection.close()
        with lock:
            results.append(elapsed)

    threads = [
        threading.Thread(target=connect, args=(sources[index % 20],)) for index in range(200)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(results) == 200
    assert max(results) < 1.0, f"{sum(r >= 1.0 for r in results)} connects took over a second"
    send_study_and_check_published(listener, amqp)


def test_refused_connections_are_logged_once_each_and_limited_per_address(
    start_listener: ListenerFactory,
) -> None:
    """30 refusals from one address: 10 WARNING lines, then one line counting the other 20."""
    listener = start_listener()
    for _ in range(30):
        with held([connect_from(ATTACKER, listener.port)]) as [connection]:
            connection.sendall(absurd_request_header())
            assert rejection_of(connection) == MALFORMED
    wait_for(
        lambda: (
            metric_value(
                http_get(f"{listener.metrics_url}/metrics")[1],
                "dicom_listener_connections_refused_total",
                'reason="invalid association request"',
            )
            == 30
        ),
        timeout=5,
        what="30 refusals counted",
    )

    assert listener.stop() == 0  # the summary of a minute not yet over is written at shutdown
    refusals = list(listener.events("connection refused before association"))
    [summary] = listener.events("refusals not logged")
    assert len(refusals) == 10
    assert all(line["level"] == "warning" for line in refusals)
    assert all(line["peer"].startswith(f"{ATTACKER}:") for line in refusals)
    assert (summary["peer_address"], summary["count"]) == (ATTACKER, 20)
    assert not [line for line in listener.logs() if "exception" in line or line.get("unparsed")]


def test_hostile_pdus_after_associating_log_no_traceback(start_listener: ListenerFactory) -> None:
    """Lines about an oversized PDU (from pynetdicom) are WARNINGs without traceback, 10 a peer."""
    listener = start_listener()
    for _ in range(15):
        with held([connect_from(ATTACKER, listener.port)]) as [connection]:
            connection.sendall(association_request())
            assert read_pdu(connection)[0] == 0x02  # A-ASSOCIATE-AC
            connection.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF) + bytes(64))
            assert read_pdu(connection)[0] in (0x07, 0)  # A-ABORT, or closed
    assert listener.stop() == 0

    lines = [line for line in listener.logs() if line.get("logger", "").startswith("pynetdicom")]
    assert lines, "pynetdicom says what it refused"
    assert len(lines) <= 10
    assert {line["level"] for line in lines} == {"warning"}
    assert not [line for line in listener.logs() if "exception" in line or line.get("unparsed")]
