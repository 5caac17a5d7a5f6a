"""Smoke test of the scale-out benchmark: ``python -m benchmarks.scale --quick``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.scale_cases import CASES

REPO = Path(__file__).parents[2]


def test_quick_scale_benchmark_reports_every_ratio(tmp_path: Path) -> None:
    """A quick run exits 0 and its JSON holds every ratio, each from verified runs.

    The workers=2 runs name two processes, the three-node runs three, each having stored a share.
    """
    output = tmp_path / "scale.json"

    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--quick", "--json", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(output.read_text())
    assert set(results["ratios"]) == {case.ratio for case in CASES}
    assert all(ratio > 0 for ratio in results["ratios"].values()), results["ratios"]
    assert results["problems"] == [] and results["error"] == ""
    runs = {
        (case["ratio_name"], run["side"]): run for case in results["cases"] for run in case["runs"]
    }
    for measured in runs.values():
        assert measured["instances_per_s"] > 0, measured
        assert sum(measured["stored_per_process"]) == measured["instances"], measured
    three = runs["nodes3_over_nodes1_postgresql_large_6assoc", "3 nodes"]["stored_per_process"]
    assert len(three) == 3 and min(three) > 0
    two = runs["workers2_over_workers1_sqlite_large_4assoc", "sqlite workers=2"]
    assert len(two["stored_per_process"]) == 2
