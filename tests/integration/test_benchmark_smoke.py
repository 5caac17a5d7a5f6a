"""Smoke test of the benchmark harness: ``python -m benchmarks.throughput --quick``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_quick_benchmark_measures_every_receiver_and_the_publish_latency(tmp_path: Path) -> None:
    """A quick run exits 0 with positive instances/s per receiver and a latency sample.

    The listener with ``dicom.workers = 2`` is sent the 4-association cells only.

    Orthanc is pointed at a path that does not exist: CI need not install it, and its cells are
    skipped with a note instead of failing the run.
    """
    output = tmp_path / "r.json"
    absent = tmp_path / "no-such-Orthanc"
    options = ["--quick", "--json", str(output), "--orthanc", str(absent)]

    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    receivers = {"storescp", "storescp-nd", "listener", "listener-w2", "bare-scp"}
    assert {cell["receiver"] for cell in results["cells"]} == receivers
    assert {c["associations"] for c in results["cells"] if c["receiver"] == "listener-w2"} == {4}
    for cell in results["cells"]:
        assert cell["instances_per_s"] > 0, cell
    assert results["latency"]["median_seconds"] > 0
    assert f"SKIPPED: orthanc, orthanc-nd: no Orthanc executable ({absent})" in run.stdout
