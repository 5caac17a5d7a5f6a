"""The benchmark's Orthanc receiver: started on free ports, it stores what it is sent.

Orthanc is a peer like DCMTK: ``scripts/setup-dev`` installs Debian's ``orthanc`` package, and a
missing one fails this test rather than skipping it.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import dcmtk, orthanc
from benchmarks.corpus import small_template, write_study
from benchmarks.receivers import start_orthanc, start_ready

BINARY = orthanc.find_binary()


def test_orthanc_receiver_stores_every_instance_it_is_sent(tmp_path: Path) -> None:
    """Each instance sent is in Orthanc's index and storage directory (both checked)."""
    assert BINARY is not None, "Orthanc is not installed: run scripts/setup-dev (Debian's orthanc)"
    study = write_study(small_template(), tmp_path / "corpus", 4)
    binary = BINARY
    receiver = start_ready(
        lambda attempt: start_orthanc(tmp_path / f"try{attempt}", tcp_nodelay=True, binary=binary)
    )
    try:
        send = dcmtk.send(
            receiver.port, receiver.called_ae, [study.root], 4, tcp_nodelay=True, log_dir=tmp_path
        )
        assert send.problem == ""
        assert receiver.http_port is not None and receiver.orthanc_dir is not None
        assert orthanc.study_instance_count(receiver.http_port, study.uid) == 4
        assert orthanc.stored_file_count(receiver.orthanc_dir) == 4
    finally:
        receiver.stop()
