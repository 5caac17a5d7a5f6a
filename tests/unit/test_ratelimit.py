"""Per-key log limits: the first few lines per key and window, then one count of the rest."""

from __future__ import annotations

from listener.ratelimit import PerKeyLimit


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_events_per_key_pass_and_the_rest_are_counted_once_the_window_ends() -> None:
    """10 of 25 events from one key pass; when its minute is over, 15 are reported once."""
    clock = Clock()
    limit = PerKeyLimit(limit=10, window=60, clock=clock)

    admitted = [limit.admit("10.0.0.9") for _ in range(25)]
    during = limit.expired()
    clock.now = 60
    after = limit.expired()

    assert admitted == [True] * 10 + [False] * 15
    assert during == []
    assert after == [("10.0.0.9", 15)]
    assert limit.expired() == []


def test_keys_are_limited_separately() -> None:
    """One noisy key does not use up another key's lines."""
    limit = PerKeyLimit(limit=2, window=60, clock=Clock())

    noisy = [limit.admit("a") for _ in range(5)]

    assert noisy == [True, True, False, False, False]
    assert limit.admit("b")


def test_a_new_window_admits_again() -> None:
    """After the window, the key's next events are logged again."""
    clock = Clock()
    limit = PerKeyLimit(limit=1, window=60, clock=clock)
    limit.admit("a")
    limit.admit("a")
    clock.now = 61

    assert limit.admit("a")
    assert limit.expired() == [("a", 1)]


def test_tracked_keys_are_bounded() -> None:
    """Beyond max_keys, the oldest window ends early (and reports its count)."""
    limit = PerKeyLimit(limit=1, window=60, max_keys=2, clock=Clock())
    for key in ("a", "a", "b", "c"):
        limit.admit(key)

    assert limit.expired() == [("a", 1)]
    assert limit.expired(all_windows=True) == []


def test_all_windows_can_be_ended_at_shutdown() -> None:
    """expired(all_windows=True) reports every suppressed count, due or not."""
    limit = PerKeyLimit(limit=1, window=60, clock=Clock())
    for _ in range(3):
        limit.admit("a")

    assert limit.expired(all_windows=True) == [("a", 2)]
