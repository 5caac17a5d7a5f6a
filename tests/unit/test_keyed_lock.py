"""KeyedLock: one holder per key, across threads and across the processes of one host."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.synchronize import Event
from pathlib import Path

from listener.keyed_lock import KeyedLock


def hold_in_child(directory: Path, key: str, held: Event, release: Event) -> None:
    with KeyedLock(directory).hold(key):
        held.set()
        release.wait(30)


def test_another_process_holding_a_key_keeps_this_one_waiting(tmp_path: Path) -> None:
    """With a directory, a key held by another process (another worker) is not taken here."""
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    child = context.Process(target=hold_in_child, args=(tmp_path, "1.2.3", held, release))
    child.start()
    try:
        assert held.wait(30)
        acquired = threading.Event()
        locks = KeyedLock(tmp_path)

        def take() -> None:
            with locks.hold("1.2.3"):
                acquired.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert not acquired.wait(0.5)
        release.set()
        assert acquired.wait(30)
        taker.join()
    finally:
        release.set()
        child.join(30)


def test_other_keys_are_not_held_up(tmp_path: Path) -> None:
    """Another SOP instance goes ahead while one is held (unless it shares its bucket)."""
    locks = KeyedLock(tmp_path)
    with locks.hold("1.2.3"):
        done = threading.Event()

        def take() -> None:
            with locks.hold("1.2.4"):
                done.set()

        other = threading.Thread(target=take)
        other.start()
        assert done.wait(5)
        other.join()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_one_lock_file_serves_every_key_until_closed(tmp_path: Path) -> None:
    """One descriptor for all keys, opened once, not per instance; close() releases it."""
    locks = KeyedLock(tmp_path)
    before = open_descriptors()
    for index in range(50):
        with locks.hold(f"1.2.3.{index}"):
            pass
    assert open_descriptors() == before + 1
    locks.close()
    assert open_descriptors() == before
    with locks.hold("1.2.3"):
        assert open_descriptors() == before + 1
    locks.close()
