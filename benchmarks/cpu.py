"""CPU time around a measurement: the machine's, the listeners', the senders', the services'.

On a shared 2-core VM a rate alone does not say what limited it; CPU milliseconds per instance,
and how busy the whole machine was, do. PostgreSQL and RabbitMQ are counted whole: on a shared
machine their CPU includes other users' work.
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
    services: dict[int, tuple[str, float]]  # PostgreSQL and RabbitMQ processes (shared): CPU s
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


SERVICES = {"postgres": "postgresql", "beam.smp": "rabbitmq"}  # process name -> service


def service_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds of each PostgreSQL and RabbitMQ process (by pid), whoever it serves."""
    found: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name = stat.read_text().partition("(")[2].rpartition(")")[0]
        except OSError:
            continue
        if name in SERVICES:
            pid = int(stat.parent.name)
            found[pid] = (SERVICES[name], process_seconds(pid))
    return found


def _service_deltas(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each service spent between the samples (a process gone by ``after`` is lost)."""
    deltas = dict.fromkeys(SERVICES.values(), 0.0)
    for pid, (service, seconds) in after.services.items():
        deltas[service] += seconds - before.services.get(pid, (service, 0.0))[1]
    return deltas


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
        service_seconds(),
        children.children_user + children.children_system,
    )


def usage(before: Sample, after: Sample, instances: int) -> dict[str, float]:
    """What the interval between two samples cost, per instance and for the machine."""
    total = max(after.machine_total - before.machine_total, 1)
    services = {
        f"{name}_cpu_ms_per_instance": round(1000 * seconds / instances, 2)
        for name, seconds in _service_deltas(before, after).items()
    }
    return services | {
        "machine_busy_percent": round(100 * (after.machine_busy - before.machine_busy) / total, 1),
        "machine_steal_percent": round(
            100 * (after.machine_steal - before.machine_steal) / total, 1
        ),
        "listener_cpu_ms_per_instance": round(
            1000 * (after.listeners - before.listeners) / instances, 2
        ),
        "sender_cpu_ms_per_instance": round(1000 * (after.senders - before.senders) / instances, 2),
    }
