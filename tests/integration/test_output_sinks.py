"""Without a broker: ImagingStudy versions as files in a directory, or as JSON lines on stdout."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydicom.uid import generate_uid

from tests.support import (
    PYDICOM_TEST_FILES,
    ListenerProcess,
    free_port,
    http_get,
    storescu,
    wait_for,
)

CT_SMALL = PYDICOM_TEST_FILES / "CT_small.dcm"
# Nothing listens here: a test that still published to a broker would fail to.
NO_BROKER = {"LISTENER_AMQP__URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}

StartListener = Callable[..., ListenerProcess]


@pytest.fixture
def start_brokerless(tmp_path: Path) -> Iterator[StartListener]:
    """Listener processes with no broker reachable, killed after the test."""
    started: list[ListenerProcess] = []

    def start(
        *,
        data_dir: Path | None = None,
        stdout: Path | None = None,
        args: tuple[str, ...] | list[str] = (),
        **env: str,
    ) -> ListenerProcess:
        settings = {
            **NO_BROKER,
            "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "0.5",
            "LISTENER_AMQP__RECONNECT_MAX_SECONDS": "0.5",
            "LISTENER_STORAGE__MIN_FREE_MB": "64",
            "LISTENER_METRICS__HOST": "127.0.0.1",
            "LISTENER_METRICS__PORT": str(free_port()),
            **env,
        }
        listener = ListenerProcess(
            data_dir=data_dir or tmp_path / "data",
            env=settings,
            stdout_path=stdout,
            args=list(args),
        )
        started.append(listener)
        return listener.start()

    yield start
    for listener in started:
        listener.kill()


def late_instance(tmp_path: Path) -> Path:
    """CT_small again as a new instance of the same study and series."""
    dataset = pydicom.dcmread(CT_SMALL)
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = tmp_path / "late.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def study_files(directory: Path) -> list[str]:
    """Names in the output directory, temporary files included."""
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def test_directory_output_writes_one_valid_imagingstudy_file_per_version(
    start_brokerless: StartListener, tmp_path: Path
) -> None:
    """With output.kind = directory and no broker, each study version becomes <uid>.v<N>.json."""
    out = tmp_path / "out"
    listener = start_brokerless(
        LISTENER_OUTPUT__KIND="directory", LISTENER_OUTPUT__DIRECTORY=str(out)
    )
    study_uid = pydicom.dcmread(CT_SMALL).StudyInstanceUID

    assert storescu(listener.port, [CT_SMALL]).succeeded
    wait_for((out / f"{study_uid}.v1.json").exists, timeout=20, what="v1")
    assert storescu(listener.port, [late_instance(tmp_path)]).succeeded
    wait_for((out / f"{study_uid}.v2.json").exists, timeout=20, what="v2")

    names = study_files(out)
    assert names == [
        f"{study_uid}.v{n}.{kind}" for n in (1, 2) for kind in ("headers.json", "json")
    ]
    resources = [json.loads((out / f"{study_uid}.v{n}.json").read_text()) for n in (1, 2)]
    assert [ImagingStudy.model_validate(r).numberOfInstances for r in resources] == [1, 2]
    headers = json.loads((out / f"{study_uid}.v2.headers.json").read_text())
    assert headers["message_id"] == f"{study_uid}/v2"
    assert headers["headers"]["study_instance_uid"] == study_uid
    assert headers["headers"]["resource_version"] == 2
    assert headers["headers"]["instance_count"] == 2
    assert headers["headers"]["completion_reason"]
    assert http_get(f"{listener.metrics_url}/readyz")[0] == 200


def test_kill_between_file_and_outbox_leaves_only_the_same_file(
    start_brokerless: StartListener, tmp_path: Path
) -> None:
    """A kill -9 after the file is written, before the outbox row goes: same name, same content."""
    out, data_dir = tmp_path / "out", tmp_path / "data"
    out.write_text("not a directory yet")  # the sink cannot write: the version waits in the outbox
    env = {"LISTENER_OUTPUT__KIND": "directory", "LISTENER_OUTPUT__DIRECTORY": str(out)}
    listener = start_brokerless(data_dir=data_dir, **env)
    study_uid = pydicom.dcmread(CT_SMALL).StudyInstanceUID
    assert storescu(listener.port, [CT_SMALL]).succeeded
    journal = sqlite3.connect(data_dir / "journal.sqlite3", timeout=10, isolation_level=None)
    wait_for(
        lambda: journal.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1,
        timeout=20,
        what="the version to wait in the outbox",
    )
    # Removing the outbox row fails (the relay retries): the version file is written, the row stays.
    journal.execute(
        "CREATE TRIGGER hold_outbox BEFORE DELETE ON outbox"
        " BEGIN SELECT RAISE(ABORT, 'held by the test'); END"
    )
    try:
        out.unlink()
        out.mkdir()
        written = out / f"{study_uid}.v1.json"
        wait_for(written.exists, timeout=20, what="the version file")
        before = written.read_bytes()
        listener.kill()
        assert journal.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
    finally:
        journal.execute("DROP TRIGGER hold_outbox")
        journal.close()

    restarted = start_brokerless(data_dir=data_dir, **env)
    wait_for(lambda: any(restarted.events("study published")), timeout=20, what="republish")

    assert study_files(out) == [f"{study_uid}.v1.headers.json", f"{study_uid}.v1.json"]
    assert written.read_bytes() == before


def stdout_lines(path: Path) -> list[dict[str, Any]]:
    """Every line the listener wrote to standard output, parsed (fails on a non-JSON line)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stdout_output_emits_one_json_line_per_version_and_nothing_else(
    start_brokerless: StartListener, tmp_path: Path
) -> None:
    """With output.kind = stdout, standard output carries exactly one JSON line per version."""
    stdout = tmp_path / "stdout.jsonl"
    listener = start_brokerless(stdout=stdout, LISTENER_OUTPUT__KIND="stdout")
    study_uid = pydicom.dcmread(CT_SMALL).StudyInstanceUID

    assert storescu(listener.port, [CT_SMALL]).succeeded
    wait_for(lambda: len(stdout_lines(stdout)) == 1, timeout=20, what="the v1 line")
    assert storescu(listener.port, [late_instance(tmp_path)]).succeeded
    wait_for(lambda: len(stdout_lines(stdout)) == 2, timeout=20, what="the v2 line")
    listener.stop()

    lines = stdout_lines(stdout)
    assert [line["message_id"] for line in lines] == [f"{study_uid}/v1", f"{study_uid}/v2"]
    assert [line["headers"]["resource_version"] for line in lines] == [1, 2]
    for line in lines:
        assert ImagingStudy.model_validate(line["resource"]).id == study_uid
        assert line["content_type"] == "application/fhir+json"
    assert any(listener.events("listener started"))  # the logs went to stderr instead


def test_output_option_on_the_command_line_needs_no_broker(
    start_brokerless: StartListener, tmp_path: Path
) -> None:
    """``dicom-listener --output DIR`` is the quick start: studies land in DIR, no broker needed."""
    out = tmp_path / "quick"
    listener = start_brokerless(args=["--output", str(out)])
    study_uid = pydicom.dcmread(CT_SMALL).StudyInstanceUID

    assert storescu(listener.port, [CT_SMALL]).succeeded
    wait_for((out / f"{study_uid}.v1.json").exists, timeout=20, what="the v1 file")
    assert http_get(f"{listener.metrics_url}/readyz")[0] == 200
