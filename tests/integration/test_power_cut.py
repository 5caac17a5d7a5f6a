"""A power cut loses no acknowledged instance: the listener on a disk that forgets unsynced writes.

``tests/crashfs.py`` is a FUSE filesystem that, like LazyFS, keeps writes in memory until they are
synced (file data at fsync/fdatasync, names at fsync of their directory). The test cuts the power
while a modality is mid-study, at every sync boundary of an instance's ack path and at random
moments, then restarts the listener on what the disk kept. After each restart every acknowledged
instance must be in the published ImagingStudy with its file intact, and the journal must pass
SQLite's integrity check.
"""

from __future__ import annotations

import contextlib
import random
import select
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from tests.modality import CT_IMAGE_STORAGE, make_study
from tests.support import (
    AmqpTopology,
    ListenerProcess,
    Received,
    free_port,
    http_get,
    latest_versions,
    metric_value,
    published_index,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
# Cut before the 1st..6th sync after a new study starts: every sync of its first instance's ack
# path (the new instances/, study and series directories named in their parents, the file, its
# directory entry, the journal's WAL) and the first of the next instance; then random moments.
SYNC_CUTS = (1, 2, 3, 4, 5, 6)
RANDOM_CUTS = 3


class CrashDisk:
    """Mounts ``tests.crashfs`` over ``backing`` at ``mount`` and talks to it."""

    def __init__(self, backing: Path, mount: Path) -> None:
        self.backing, self.mount = backing, mount
        self.process: subprocess.Popen[str] | None = None

    def attach(self) -> None:
        """Mount; the durable state in ``backing`` is what the listener will find."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crashfs", str(self.backing), str(self.mount)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._answer(timeout=10) == "ready"

    def command(self, line: str) -> str:
        """Send one control command (see tests/crashfs.py) and return its answer."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer(timeout=5)

    def _answer(self, *, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise AssertionError("crashfs did not answer")
        return self.process.stdout.readline().strip()

    def detach(self) -> None:
        """Unmount; crashfs then writes only what was synced back to ``backing``."""
        if self.process is None:
            return
        wait_for(
            lambda: (
                subprocess.run(["fusermount3", "-u", str(self.mount)]).returncode == 0
                or self.process is None
                or self.process.poll() is not None
            ),
            timeout=10,
            what="the crash disk to unmount",
        )
        try:
            self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process = None


@pytest.fixture
def crash_disk(tmp_path: Path) -> Iterator[CrashDisk]:
    """A crashfs disk, unmounted afterwards whatever happens."""
    if shutil.which("fusermount3") is None or not Path("/dev/fuse").exists():
        raise AssertionError("FUSE is missing: apt-get install -y fuse3")
    backing, mount = tmp_path / "disk", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    disk = CrashDisk(backing, mount)
    try:
        yield disk
    finally:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            disk.detach()
        subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True)


class Sender:
    """A modality sending one instance at a time; ``acked`` holds those answered with 0x0000."""

    def __init__(self, port: int) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        self._association: Association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
        assert self._association.is_established

    def send(self, datasets: list[Dataset], acked: list[str]) -> None:
        """Send until the association breaks (the power went) or everything is acknowledged."""
        for dataset in datasets:
            try:
                status = self._association.send_c_store(dataset)
            except (RuntimeError, OSError):
                return
            if not status or status.Status != 0x0000:
                return
            acked.append(str(dataset.SOPInstanceUID))
        self._association.release()


def lost_instances(
    listener: ListenerProcess,
    sent: dict[str, Dataset],
    acked: list[str],
    published: dict[str, dict[str, Any]],
) -> list[str]:
    """Acknowledged instances missing from their study's newest version, or whose file is hurt."""
    lost = []
    for uid in acked:
        dataset = sent[uid]
        study_uid, series_uid = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        resource = published.get(study_uid, {"series": []})
        in_resource = uid in published_index(resource).get(series_uid, set())
        path = listener.data_dir / "instances" / study_uid / series_uid / f"{uid}.dcm"
        try:
            stored = pydicom.dcmread(path)
            intact = stored.SOPInstanceUID == uid and stored.PixelData == dataset.PixelData
        except (OSError, pydicom.errors.InvalidDicomError, AttributeError):
            intact = False
        if not in_resource or not intact:
            lost.append(
                f"{uid} ({'published' if in_resource else 'not published'}, "
                f"file {'intact' if intact else 'lost'})"
            )
    return lost


def journal_is_sound(backing: Path, scratch: Path) -> str:
    """SQLite's integrity check of the journal the disk kept (on a copy: checking writes)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for part in backing.glob("journal.sqlite3*"):
        shutil.copy(part, scratch / part.name)
    with contextlib.closing(sqlite3.connect(scratch / "journal.sqlite3")) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


class PowerCutRun:
    """A new study sent in each cycle until the power goes; the check after each restart."""

    def __init__(self, disk: CrashDisk, amqp: AmqpTopology, tmp_path: Path) -> None:
        self.disk, self.amqp, self.tmp_path = disk, amqp, tmp_path
        self.sent: dict[str, Dataset] = {}
        self.acked: list[str] = []
        self.messages: list[Received] = []
        self.metrics_port = free_port()

    def start_listener(self) -> ListenerProcess:
        env = {
            **self.amqp.env(),
            "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "0.3",
            "LISTENER_STORAGE__MIN_FREE_MB": "1",
            "LISTENER_METRICS__HOST": "127.0.0.1",
            "LISTENER_METRICS__PORT": str(self.metrics_port),
        }
        return ListenerProcess(data_dir=self.disk.mount, env=env).start()

    def check(self, listener: ListenerProcess, what: str) -> None:
        """Every acknowledged instance is published and intact; then the outbox is empty."""

        def lost() -> list[str]:
            published = latest_versions(self.messages)
            return lost_instances(listener, self.sent, self.acked, published)

        def complete() -> bool:
            self.messages += self.amqp.drain_until_quiet(quiet=0.1, timeout=1)
            return not lost()

        try:
            wait_for(complete, timeout=15, what="every acknowledged instance")
        except AssertionError:
            missing = lost()
            raise AssertionError(
                f"after {what}: {len(missing)} acknowledged instances lost: {missing}"
            ) from None
        metrics = f"{listener.metrics_url}/metrics"
        wait_for(
            lambda: metric_value(http_get(metrics)[1], "dicom_listener_outbox_depth") == 0,
            timeout=10,
            what="an empty outbox",
        )

    def cycle(self, cut: str, *, previous: str) -> None:
        """Mount, restart, check what the ``previous`` cut left, send until the power goes."""
        self.disk.attach()
        listener = self.start_listener()
        try:
            self.check(listener, previous)
            assert listener.process is not None
            pid = listener.process.pid
            study = make_study(20)
            self.sent.update((str(d.SOPInstanceUID), d) for d in study)
            sender = Sender(listener.port)
            if cut.startswith("sync "):
                assert self.disk.command(f"arm {cut.split()[1]} {pid}") == "ok"
                sender.send(study, self.acked)
            else:
                timer = threading.Timer(float(cut.split()[1]), self.disk.command, (f"cut {pid}",))
                timer.start()
                sender.send(study, self.acked)
                timer.join()
            self.disk.command(f"cut {pid}")  # if the armed sync never came
            listener.process.wait(timeout=10)
        finally:
            listener.kill()
            self.disk.detach()
        assert journal_is_sound(self.disk.backing, self.tmp_path / "scratch") == "ok", cut


def test_power_cut_at_any_sync_loses_no_acknowledged_instance(
    crash_disk: CrashDisk, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """Cut before every sync of the ack path and at random moments; every ack survives."""
    seed = time.time_ns()
    chance = random.Random(seed)
    cuts = [f"sync {n}" for n in SYNC_CUTS] + [
        f"time {chance.uniform(0.0, 0.25):.3f}" for _ in range(RANDOM_CUTS)
    ]
    run = PowerCutRun(crash_disk, amqp, tmp_path)
    for previous, cut in zip(["start", *cuts], cuts, strict=False):
        run.cycle(cut, previous=f"cut at {previous}")
    crash_disk.attach()
    listener = run.start_listener()
    try:
        run.check(listener, f"cut at {cuts[-1]} (random seed {seed})")
    finally:
        listener.stop()
        crash_disk.detach()
    assert run.acked, "the sender got no acknowledgement at all"
