"""The scale benchmark's arithmetic: best of the rounds, ratios, per-process metric deltas."""

from __future__ import annotations

from benchmarks.scale_cases import (
    COMMIT_COUNT,
    COMMIT_SUM,
    STORED,
    CaseResult,
    Run,
    process_deltas,
)


def test_ratio_is_best_candidate_over_best_baseline_failed_runs_left_out() -> None:
    """Each side's best successful round counts; a failed round has no rate."""
    result = CaseResult("r", "large", 4, "one", "two")
    result.runs = [
        Run("one", 0, 100, 1, 2.0),  # 50/s
        Run("two", 0, 100, 1, 1.0, problem="2 messages"),  # failed: would be 100/s
        Run("one", 1, 100, 1, 4.0),  # 25/s
        Run("two", 1, 100, 1, 1.25),  # 80/s
    ]

    result.settle()

    assert (result.best_baseline, result.best_candidate) == (50.0, 80.0)
    assert result.ratio == 1.6


def test_no_ratio_when_a_side_never_succeeded() -> None:
    """Without one successful run on each side the ratio is None (the run then exits 1)."""
    result = CaseResult("r", "small", 1, "one", "two")
    result.runs = [Run("one", 0, 10, 1, 1.0), Run("two", 0, 10, 1, 1.0, problem="no message")]

    result.settle()

    assert result.ratio is None


def test_process_deltas_give_each_process_its_stored_instances_and_mean_commit() -> None:
    """Counters before and after a send give per-process stores and mean commit ms."""
    before: list[dict[str, float]] = [{STORED: 10, COMMIT_SUM: 0.5, COMMIT_COUNT: 10}, {}]
    after: list[dict[str, float]] = [{STORED: 40, COMMIT_SUM: 0.62, COMMIT_COUNT: 40}, {STORED: 0}]

    stored, commit_ms = process_deltas(before, after)

    assert stored == [30, 0]
    assert commit_ms == [4.0, None]
