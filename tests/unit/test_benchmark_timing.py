"""The benchmark's send timing: a sender's exit is seen when it happens; a hung one is ended."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks import dcmtk


def test_a_sender_that_outlives_the_send_timeout_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A storescu stuck past SEND_TIMEOUT_SECONDS is killed and reported with exit code -9."""
    monkeypatch.setattr(dcmtk, "SEND_TIMEOUT_SECONDS", 0.2)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    assert dcmtk._wait(process) == -9


def test_the_wait_blocks_instead_of_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sleep-and-poll (Popen.wait with a timeout polls every 50 ms, blurring send times)."""
    naps: list[float] = []
    sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        naps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])

    assert dcmtk._wait(process) == 0
    assert naps == []
