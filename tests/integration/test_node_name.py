"""storage.node_name: each journaled instance names the listener that holds its file."""

from __future__ import annotations

from listener.journal import Journal
from tests.conftest import ListenerFactory
from tests.support import PYDICOM_TEST_FILES, AmqpTopology, storescu


def test_each_stored_instance_records_the_node_holding_its_file(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """An instance stored by a listener named node-a has node = node-a in its journal record."""
    listener = start_listener(LISTENER_STORAGE__NODE_NAME="node-a")
    assert storescu(listener.port, [PYDICOM_TEST_FILES / "CT_small.dcm"]).succeeded
    amqp.drain(1, timeout=30)
    listener.stop()

    journal = Journal(listener.data_dir / "journal.sqlite3")
    try:
        [study] = journal.list_studies(limit=10)
        records = journal.study_records(study.study_uid)
    finally:
        journal.close()

    assert [record.node for record in records] == ["node-a"]
