"""Operating the listener: CLI subcommands, metrics, health endpoints, container files."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ListenerFactory
from tests.modality import Modality, make_study
from tests.support import (
    DICOMDIR_TESTS,
    RABBITMQ_URL,
    AmqpTopology,
    TcpProxy,
    dicom_files,
    free_port,
    http_get,
    metric_value,
    storescu,
    wait_for,
)

ROOT = Path(__file__).parents[2]


def test_check_config_shows_sources_and_masks_the_broker_password(
    start_listener: ListenerFactory,
) -> None:
    """check-config prints every key with its origin and never the broker password."""
    listener = start_listener(LISTENER_AMQP__URL="amqp://ops:s3cr3t-pw@broker:5672/%2F")

    result = listener.cli("check-config")

    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pw" not in result.stdout
    assert 'amqp.url = "amqp://ops:***@broker:5672/%2F"  # env' in result.stdout
    assert 'dicom.ae_title = "DICOM-LISTENER"  # default' in result.stdout


def test_check_config_exits_non_zero_on_an_invalid_value(start_listener: ListenerFactory) -> None:
    """An invalid setting makes check-config fail with status 2 and name the key."""
    listener = start_listener()
    listener.env["LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS"] = "-1"

    result = listener.cli("check-config")

    assert result.returncode == 2
    assert "aggregator.quiet_period_seconds" in result.stderr


def test_echo_succeeds_against_the_listener_and_fails_without_one(
    start_listener: ListenerFactory,
) -> None:
    """``echo`` exits 0 after a successful C-ECHO and 1 when nobody answers."""
    listener = start_listener()

    ok = listener.cli("echo")
    failed = listener.cli("echo", "127.0.0.1", str(free_port()), "--timeout", "2")

    assert ok.returncode == 0, ok.stderr
    assert "status 0x0000" in ok.stdout
    assert failed.returncode == 1
    assert "C-ECHO failed" in failed.stderr


def test_studies_lists_pending_and_published_studies(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """``studies`` shows each study's state, version and counts as a table."""
    listener = start_listener(quiet_period=0.5)
    published = make_study(3, series=1)
    Modality(listener.port).send_all(published)
    amqp.drain(1, timeout=20)
    assert listener.stop() == 0
    listener = start_listener(quiet_period=600, data_dir=listener.data_dir)
    pending = make_study(4, series=2)
    Modality(listener.port).send_all(pending)

    result = listener.cli("studies")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["STUDY", "INSTANCE", "UID"]
    assert rows[0].split()[:5] == [str(pending[0].StudyInstanceUID), "pending", "0", "2", "4"]
    assert rows[1].split()[:5] == [str(published[0].StudyInstanceUID), "published", "1", "1", "3"]


def test_republish_emits_a_new_version_through_the_running_listener(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """``republish UID`` queues version 2, which the running listener publishes; unknown fails."""
    listener = start_listener(quiet_period=0.3)
    studies = [make_study(2, series=1) for _ in range(2)]
    for study in studies:
        Modality(listener.port).send_all(study)
    amqp.drain(2, timeout=20)
    uids = [str(study[0].StudyInstanceUID) for study in studies]

    result = listener.cli("republish", *uids)
    unknown = listener.cli("republish", "1.2.3.4.5.6.7.8.9")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"[1/2] {uids[0]}: queued as version 2",
        f"[2/2] {uids[1]}: queued as version 2",
    ]
    messages = amqp.drain(2, timeout=20)
    assert sorted(m.properties.message_id for m in messages) == sorted(f"{u}/v2" for u in uids)
    assert unknown.returncode == 1
    assert "unknown study" in unknown.stdout


def test_metrics_count_what_a_storescu_run_did(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """After a storescu run the counters show its associations, instances, bytes and studies."""
    files = dicom_files(DICOMDIR_TESTS / "77654033")
    listener = start_listener(quiet_period=0.3)
    storescu(listener.port, files)
    amqp.drain(2, timeout=20)
    wait_for(
        lambda: (
            metric_value(
                http_get(f"{listener.metrics_url}/metrics")[1],
                "dicom_listener_studies_published_total",
            )
            == 2
        ),
        timeout=10,
        what="two published studies in the metrics",
    )

    _, text = http_get(f"{listener.metrics_url}/metrics")

    assert metric_value(text, "dicom_listener_instances_received_total", 'outcome="stored"') == len(
        files
    )
    size = sum(path.stat().st_size for path in files)
    assert metric_value(text, "dicom_listener_received_bytes_total") >= size * 0.9
    assert metric_value(text, "dicom_listener_associations_total", 'outcome="accepted"') == 1
    assert metric_value(text, "dicom_listener_studies_pending") == 0
    assert metric_value(text, "dicom_listener_outbox_depth") == 0
    assert metric_value(text, "dicom_listener_journal_commit_seconds_count") == len(files)
    assert metric_value(text, "dicom_listener_publish_latency_seconds_count") == 2
    assert http_get(f"{listener.metrics_url}/healthz") == (200, "ok\n")
    assert http_get(f"{listener.metrics_url}/readyz") == (200, "ready\n")


def test_readyz_stays_ready_while_the_broker_is_unreachable(
    start_listener: ListenerFactory,
) -> None:
    """A cut broker link leaves /readyz 200 (the outbox holds messages); the gauge shows it."""
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        url = RABBITMQ_URL.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        listener = start_listener(LISTENER_AMQP__URL=url, LISTENER_AMQP__RECONNECT_MAX_SECONDS="1")
        readyz = f"{listener.metrics_url}/readyz"
        wait_for(lambda: http_get(readyz)[0] == 200, timeout=20, what="ready")

        metrics = f"{listener.metrics_url}/metrics"
        connected = "dicom_listener_broker_connected"
        wait_for(lambda: metric_value(http_get(metrics)[1], connected) == 1, timeout=20, what="up")

        proxy.cut()
        wait_for(lambda: metric_value(http_get(metrics)[1], connected) == 0, timeout=20, what="cut")
        assert http_get(readyz) == (200, "ready\n")
        assert http_get(f"{listener.metrics_url}/healthz")[0] == 200

        proxy.restore()
        wait_for(
            lambda: metric_value(http_get(metrics)[1], connected) == 1, timeout=20, what="back"
        )
    finally:
        proxy.close()


def test_dockerfile_runs_unprivileged_with_a_dicom_healthcheck() -> None:
    """The image is multi-stage, runs as a non-root USER and checks health with a C-ECHO."""
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2
    [user] = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert user not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", dockerfile, re.MULTILINE | re.DOTALL)
    assert healthcheck is not None and "dicom-listener" in healthcheck.group(1)
    assert '"echo"' in healthcheck.group(1)
    assert re.search(r"^EXPOSE 11112 9464$", dockerfile, re.MULTILINE)
    assert re.search(r'^VOLUME \["/data"\]$', dockerfile, re.MULTILINE)


def test_compose_file_runs_rabbitmq_beside_the_listener() -> None:
    """compose.yaml defines a rabbitmq service and a listener service that uses it."""
    compose = (ROOT / "compose.yaml").read_text()

    assert re.search(r"^  rabbitmq:\n    image: rabbitmq:3-management$", compose, re.MULTILINE)
    assert re.search(r"^  listener:$", compose, re.MULTILINE)
    assert "amqp://guest:guest@rabbitmq:5672" in compose
