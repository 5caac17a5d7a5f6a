"""Several listener nodes on one PostgreSQL journal and one queue: every study finished once.

Nodes fail (SIGKILL, SIGTERM) and the database restarts while a study is being sent; what was
acknowledged is published, by whichever node, as one ImagingStudy.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster import HaProxy, Nodes, holders, write_study
from tests.conftest import ClusterFactory
from tests.modality import (
    MPPS,
    STORAGE_COMMITMENT,
    STORAGE_COMMITMENT_INSTANCE,
    Attempt,
    Modality,
    commitment_request,
    create_mpps,
    make_study,
    modality_association,
    mpps_end,
    report_uids,
)
from tests.postgres_server import PrivatePostgres
from tests.support import (
    AmqpTopology,
    Received,
    http_get,
    latest_versions,
    published_instances,
    storescu,
    wait_for,
)

QUIET = 3.0  # seconds: longer than any pause inside a send, shorter than the test's patience
FAILURE_STATUSES = {0xA700, 0x0110}  # out of resources, processing failure


def all_messages(amqp: AmqpTopology) -> list[Received]:
    """The first message, then every other one until none has come for longer than QUIET."""
    return amqp.drain(1, timeout=60) + amqp.drain_until_quiet(quiet=QUIET + 2, timeout=60)


def summary(messages: list[Received]) -> list[tuple[str, int]]:
    """Each message's message_id and number of instances, for assertion messages."""
    return [(m.properties.message_id, m.resource["numberOfInstances"]) for m in messages]


def readyz(nodes: Nodes) -> dict[str, int]:
    """Each node's /readyz status code."""
    return {name: http_get(f"{node.metrics_url}/readyz")[0] for name, node in nodes.items()}


def test_one_study_over_three_nodes_with_one_killed_is_one_message_with_every_ack(
    start_cluster: ClusterFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """Interleaved storescu associations to three nodes; node-b SIGKILLed right after its acks.

    Before the quiet period ends nothing is published; then exactly one ImagingStudy (one
    message_id) arrives, holding every acknowledged instance, node-b's included.
    """
    nodes = start_cluster(3, quiet_period=QUIET)
    files = write_study(make_study(24, series=3), tmp_path / "study")
    paths = list(files)
    subsets = {name: paths[index::3] for index, name in enumerate(nodes)}

    with ThreadPoolExecutor(len(nodes)) as pool:
        runs = {name: pool.submit(storescu, nodes[name].port, subsets[name]) for name in nodes}
        victim_run = runs["node-b"].result()
        nodes["node-b"].kill()
        published_before_kill = amqp.depth()
        results = {name: run.result() for name, run in runs.items()}

    assert victim_run.succeeded == subsets["node-b"], victim_run.output
    acked = {files[path] for run in results.values() for path in run.succeeded}
    assert acked == set(files.values()), "every C-STORE should succeed while all nodes run"
    assert published_before_kill == 0, "the quiet period ended before the kill: raise QUIET"
    messages = all_messages(amqp)
    assert len(messages) == 1, summary(messages)
    assert sorted(published_instances(messages)) == sorted(acked)


def answered_after(modality: Modality, moment: float) -> list[Attempt]:
    """The C-STOREs ``modality`` sent after ``moment``."""
    return [attempt for attempt in modality.attempts if attempt.sent > moment]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_behind_haproxy_a_node_stopped_mid_send_loses_nothing_acknowledged(
    start_cluster: ClusterFactory, amqp: AmqpTopology, tmp_path: Path, stop_signal: int
) -> None:
    """HAProxy over three nodes; the node serving the sender is stopped mid-send.

    HAProxy takes it out (its /readyz no longer answers); the sender's new associations go to
    the other nodes; the newest published version holds every acknowledged instance.
    """
    nodes = start_cluster(3, quiet_period=QUIET)
    proxy = HaProxy(nodes, tmp_path).start()
    try:
        study = make_study(30, series=3)
        modality = Modality(proxy.port, per_association=2, pace_seconds=0.05)
        sender = modality.start(study)
        wait_for(lambda: len(modality.acked) >= 10, timeout=60, what="10 instances acknowledged")
        victim = holders(nodes, {modality.acked[-1]})[modality.acked[-1]]
        nodes[victim].stop(stop_signal)
        stopped_at = time.monotonic()
        proxy.wait_down(victim)
        sender.join(timeout=120)
    finally:
        proxy.stop()

    assert not sender.is_alive(), "the sender did not get its study acknowledged"
    after = [a.sop_instance_uid for a in answered_after(modality, stopped_at) if a.status == 0]
    assert after, "the node was stopped after the send had ended"
    held = holders(nodes, set(modality.acked))
    assert {held[uid] for uid in after} <= set(nodes) - {victim}
    assert victim in held.values()
    messages = all_messages(amqp)
    assert len({m.properties.message_id for m in messages}) == len(messages), summary(messages)
    [resource] = latest_versions(messages).values()
    assert resource["numberOfInstances"] == len(modality.acked), summary(messages)
    assert sorted(published_instances(messages)) == sorted(modality.acked)


def test_postgresql_restarted_mid_send_refuses_stores_while_down_then_publishes_every_ack(
    start_cluster: ClusterFactory, private_postgres: PrivatePostgres, amqp: AmqpTopology
) -> None:
    """A private PostgreSQL stopped while two nodes receive, then started again.

    While it is down every C-STORE answered gets 0xA700 or 0x0110 (never success) and /readyz is
    503 on both nodes; afterwards the senders' retries succeed, /readyz is 200 again, and the
    newest published version holds every acknowledged instance.
    """
    url = private_postgres.create_database("journal")
    nodes = start_cluster(2, database_url=url, quiet_period=QUIET)
    study = make_study(24, series=2)
    # A failure answer may take the journal's connection timeout (5 s): wait longer for it.
    modalities = [Modality(n.port, pace_seconds=0.1, timeout_seconds=20) for n in nodes.values()]
    senders = [modality.start(study[index::2]) for index, modality in enumerate(modalities)]
    wait_for(lambda: all(len(m.acked) >= 3 for m in modalities), timeout=60, what="first acks")

    private_postgres.stop()
    down_at = time.monotonic()
    wait_for(lambda: set(readyz(nodes).values()) == {503}, timeout=20, what="/readyz 503")
    wait_for(
        lambda: all(any(a.answered > a.sent > down_at for a in m.attempts) for m in modalities),
        timeout=30,
        what="C-STOREs answered while the database is down",
    )
    up_at = time.monotonic()
    private_postgres.start()
    for sender in senders:
        sender.join(timeout=120)

    while_down = [a for m in modalities for a in answered_after(m, down_at) if a.answered < up_at]
    assert while_down and {a.status for a in while_down} <= FAILURE_STATUSES, while_down
    assert not any(sender.is_alive() for sender in senders), "retries did not succeed"
    wait_for(lambda: set(readyz(nodes).values()) == {200}, timeout=20, what="/readyz 200")
    acked = [uid for m in modalities for uid in m.acked]
    assert sorted(acked) == sorted(str(d.SOPInstanceUID) for d in study)
    assert sorted(published_instances(all_messages(amqp))) == sorted(acked)


def test_mpps_created_on_one_node_and_completed_on_another_finishes_the_study_once(
    start_cluster: ClusterFactory, amqp: AmqpTopology
) -> None:
    """N-CREATE on node-a, instances on node-a and node-b, N-SET COMPLETED on node-b.

    The study is finished at once (completion_reason mpps-completed, the quiet period is 600 s)
    as one message holding the instances from both nodes.
    """
    nodes = start_cluster(2, quiet_period=600)
    study = make_study(4, series=2)
    on_a = modality_association(nodes["node-a"].port)
    mpps_uid = create_mpps(on_a, str(study[0].StudyInstanceUID))
    statuses = [on_a.send_c_store(dataset).Status for dataset in study[:2]]
    on_a.release()
    on_b = modality_association(nodes["node-b"].port)
    statuses += [on_b.send_c_store(dataset).Status for dataset in study[2:]]
    completed, _ = on_b.send_n_set(mpps_end("COMPLETED", study), MPPS, mpps_uid)
    on_b.release()

    assert statuses == [0x0000] * len(study)
    assert completed.Status == 0x0000
    messages = all_messages(amqp)
    assert len(messages) == 1, summary(messages)
    [message] = messages
    assert message.properties.headers["completion_reason"] == "mpps-completed"
    assert sorted(published_instances(messages)) == sorted(str(d.SOPInstanceUID) for d in study)


def test_storage_commitment_on_a_third_node_commits_instances_stored_on_the_other_two(
    start_cluster: ClusterFactory,
) -> None:
    """Instances stored on node-a and node-b; a commitment request to node-c commits them all."""
    nodes = start_cluster(3, quiet_period=600)
    study = make_study(4, series=1)
    senders = [Modality(nodes["node-a"].port), Modality(nodes["node-b"].port)]
    senders[0].send_all(study[:2])
    senders[1].send_all(study[2:])
    on_c = modality_association(nodes["node-c"].port, commitment_role=True)

    status, _ = on_c.send_n_action(
        commitment_request(study, []), 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    wait_for(lambda: on_c.reports, timeout=15, what="the N-EVENT-REPORT")
    on_c.release()

    assert [len(sender.acked) for sender in senders] == [2, 2]
    assert status.Status == 0x0000
    [(event_type, report)] = on_c.reports
    assert report_uids(report) == ({str(d.SOPInstanceUID) for d in study}, {})
    assert event_type == 1
