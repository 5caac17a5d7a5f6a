"""Broker-less sinks: a directory of durable JSON files, or JSON lines on standard output."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from listener.config import ConfigError, load_settings
from listener.publisher import Message, PublishError
from listener.sinks import DirectorySink, StdoutSink

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def message(version: int = 1) -> Message:
    resource = {"resourceType": "ImagingStudy", "id": STUDY_UID, "numberOfInstances": version}
    return Message(
        body=json.dumps(resource).encode(),
        message_id=f"{STUDY_UID}/v{version}",
        headers={
            "study_instance_uid": STUDY_UID,
            "resource_version": version,
            "fhir_version": "4.0.1",
            "completion_reason": "quiet-period",
        },
        timestamp=1_700_000_000,
    )


def test_directory_sink_writes_the_resource_and_its_headers_under_version_names(
    tmp_path: Path,
) -> None:
    """One <uid>.v<N>.json holding the body and one .headers.json with what AMQP would carry."""
    sink = DirectorySink(tmp_path / "out")

    sink.publish(message(3))

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        f"{STUDY_UID}.v3.headers.json",
        f"{STUDY_UID}.v3.json",
    ]
    assert (out / f"{STUDY_UID}.v3.json").read_bytes() == message(3).body
    envelope = json.loads((out / f"{STUDY_UID}.v3.headers.json").read_text())
    assert envelope["message_id"] == f"{STUDY_UID}/v3"
    assert envelope["content_type"] == "application/fhir+json"
    assert envelope["headers"]["completion_reason"] == "quiet-period"


def test_directory_sink_files_are_private(tmp_path: Path) -> None:
    """The files hold patient data: readable by the listener's user only, whatever the umask."""
    sink = DirectorySink(tmp_path / "out")
    sink.publish(message())

    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_directory_sink_publishing_a_version_again_rewrites_the_same_file(tmp_path: Path) -> None:
    """A re-sent version (after a crash before the outbox update) leaves one file, same content."""
    sink = DirectorySink(tmp_path / "out")
    sink.publish(message())
    first = (tmp_path / "out" / f"{STUDY_UID}.v1.json").read_bytes()

    sink.publish(message())

    assert len(list((tmp_path / "out").iterdir())) == 2
    assert (tmp_path / "out" / f"{STUDY_UID}.v1.json").read_bytes() == first


def test_directory_sink_that_cannot_write_raises_publish_error(tmp_path: Path) -> None:
    """An unusable directory is a PublishError (the outbox keeps the message), not a crash."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = DirectorySink(blocker / "out")

    with pytest.raises(PublishError):
        sink.publish(message())
    assert not sink.connected


def test_stdout_sink_writes_one_json_line_per_version() -> None:
    """Each version is one line: the envelope plus the resource, parseable on its own."""
    stream = io.StringIO()
    sink = StdoutSink(stream)

    sink.publish(message(1))
    sink.publish(message(2))

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message_id"] for line in lines] == [f"{STUDY_UID}/v1", f"{STUDY_UID}/v2"]
    assert lines[1]["resource"]["numberOfInstances"] == 2
    assert lines[1]["headers"]["resource_version"] == 2


def test_stdout_sink_on_a_closed_stream_raises_publish_error() -> None:
    """A reader that went away is a PublishError and the sink reports itself unavailable."""
    stream = io.StringIO()
    stream.close()
    sink = StdoutSink(stream)

    with pytest.raises(PublishError):
        sink.publish(message())
    assert not sink.connected


def test_directory_output_requires_a_directory() -> None:
    """output.kind = directory without output.directory stops start-up naming the key."""
    with pytest.raises(ConfigError, match=r"output\.directory"):
        load_settings(None, {"LISTENER_OUTPUT__KIND": "directory"})
