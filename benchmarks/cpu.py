"""CPU time around a measurement: the machine's (busy and stolen), the listeners', the senders'.

On a shared 2-core VM a rate alone does not say what limited it; CPU milliseconds per instance,
and how busy the whole machine was, do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """CPU counters at one moment."""

    at: float  # time.monotonic()
    machine_busy: int  # ticks, all CPUs: everything but idle and iowait
    machine_steal: int  # ticks taken by the hypervisor for other guests
    machine_total: int
    listeners: float  # seconds of CPU (user + system) of the listener processes and their children
    senders: float  # seconds of CPU of this process's reaped children (the storescu processes)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the workers under a supervisor)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
        index += 1
    return tree


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def _machine() -> tuple[int, int, int]:
    """Busy, steal and total ticks of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, values[7], sum(values)


def sample(listener_pids: Sequence[int]) -> Sample:
    """The counters now, for the listener processes ``listener_pids`` and their descendants."""
    busy, steal, total = _machine()
    pids = [pid for root in listener_pids for pid in process_tree(root)]
    children = os.times()
    return Sample(
        time.monotonic(),
        busy,
        steal,
        total,
        sum(process_seconds(pid) for pid in pids),
        children.children_user + children.children_system,
    )


def usage(before: Sample, after: Sample, instances: int) -> dict[str, float]:
    """What the interval between two samples cost, per instance and for the machine."""
    total = max(after.machine_total - before.machine_total, 1)
    return {
        "machine_busy_percent": round(100 * (after.machine_busy - before.machine_busy) / total, 1),
        "machine_steal_percent": round(
            100 * (after.machine_steal - before.machine_steal) / total, 1
        ),
        "listener_cpu_ms_per_instance": round(
            1000 * (after.listeners - before.listeners) / instances, 2
        ),
        "sender_cpu_ms_per_instance": round(1000 * (after.senders - before.senders) / instances, 2),
    }
