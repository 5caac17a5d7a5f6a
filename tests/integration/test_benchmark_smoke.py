"""Smoke test of the benchmark harness: ``python -m benchmarks.throughput --quick``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_quick_benchmark_measures_every_receiver_and_the_publish_latency(tmp_path: Path) -> None:
    """A quick run exits 0 with positive instances/s per receiver and a latency sample."""
    output = tmp_path / "r.json"

    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--quick", "--json", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    receivers = {"storescp", "storescp-nd", "listener", "bare-scp"}
    assert {cell["receiver"] for cell in results["cells"]} == receivers
    for cell in results["cells"]:
        assert cell["instances_per_s"] > 0, cell
    assert results["latency"]["median_seconds"] > 0
