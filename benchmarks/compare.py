"""Interleaved rounds on one association: listener builds side by side, next to Orthanc.

``python -m benchmarks.compare [--listener NAME=CHECKOUT ...] [--rounds R] [--count N]
[--large-count M] [--no-orthanc]`` starts one listener per checkout (``python -m listener`` run
from that directory, so two commits can be compared in one run), ``orthanc-nd`` (Orthanc with
``TCP_NODELAY=1``) and the bare pynetdicom SCP, then sends R rounds of a fresh small and a fresh
large study to each in turn with one ``storescu`` (``TCP_NODELAY=1``). Every send is checked
(storescu's responses; the listener's ImagingStudy; Orthanc's index). It prints each round's
rates (and the receiver's CPU time per instance, user + system, all its threads), the best of the
rounds and each listener's best over ``orthanc-nd``'s. The full table is
:mod:`benchmarks.throughput`'s; this is for measuring one lever in a few minutes on a noisy
machine, where only rates taken in the same run are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import dcmtk, orthanc
from benchmarks.amqp import DEFAULT_URL, StudyReader, Topology
from benchmarks.corpus import large_template, small_template, write_study
from benchmarks.receivers import REPO, Receiver, start_bare_scp, start_listener, start_orthanc

PUBLISH_TIMEOUT_SECONDS = 60.0
SIZES = ("small", "large")


@dataclass
class Contender:
    """A receiver under test and, for a listener, the broker topology it publishes to."""

    receiver: Receiver
    topology: Topology | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--listener`` defaults to this checkout as ``listener``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--listener", action="append", default=[], help="NAME=CHECKOUT_DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300, help="small instances per send")
    parser.add_argument("--large-count", type=int, default=60, help="large instances per send")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--no-bare", action="store_true")
    args = parser.parse_args(argv)
    args.listener = args.listener or [f"listener={REPO}"]
    return args


def start(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> list[Contender]:
    """Every receiver, started and answering C-ECHO (each stopped when ``stack`` closes)."""
    contenders: list[Contender] = []
    for spec in args.listener:
        name, _, checkout = spec.partition("=")
        topology = Topology(DEFAULT_URL)
        stack.callback(topology.delete)
        receiver = start_listener(
            work,
            name=name,
            quiet_period=0.5,
            amqp=topology.listener_env(),
            cwd=Path(checkout).resolve(),
        )
        contenders.append(Contender(receiver, topology))
    binary = orthanc.find_binary()
    if binary and not args.no_orthanc:
        contenders.append(Contender(start_orthanc(work, tcp_nodelay=True, binary=binary)))
    if not args.no_bare:
        contenders.append(Contender(start_bare_scp(work)))
    for contender in contenders:
        stack.callback(contender.receiver.stop)
        contender.receiver.wait_ready()
    return contenders


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    contender: Contender, root: Path, count: int, uid: str, logs: Path
) -> tuple[float, float] | None:
    """Instances/s and CPU ms per instance of one send; None when anything is missing."""
    receiver = contender.receiver
    cpu = cpu_seconds(receiver.process.pid)
    send = dcmtk.send(
        receiver.port, receiver.called_ae, [root], count, tcp_nodelay=True, log_dir=logs
    )
    if send.problem:
        print(f"{receiver.name}: {send.problem}", file=sys.stderr)
        return None
    cpu_ms = (cpu_seconds(receiver.process.pid) - cpu) * 1000 / count
    if contender.topology is not None:
        with StudyReader(contender.topology) as reader:
            arrived = reader.wait([uid], timeout=PUBLISH_TIMEOUT_SECONDS).get(uid)
        if arrived is None or arrived.instance_count != count:
            print(f"{receiver.name}: ImagingStudy incomplete: {arrived}", file=sys.stderr)
            return None
    elif receiver.http_port is not None:
        found = orthanc.study_instance_count(receiver.http_port, uid)
        if found != count:
            print(f"{receiver.name}: Orthanc holds {found}/{count}", file=sys.stderr)
            return None
    return count / send.seconds, cpu_ms


def run(args: argparse.Namespace, work: Path, contenders: list[Contender]) -> dict[str, float]:
    """Every round, each size, each receiver in turn; the best rate per (receiver, size)."""
    templates = {"small": small_template(), "large": large_template()}
    counts = {"small": args.count, "large": args.large_count}
    logs = work / "logs"
    logs.mkdir()
    best: dict[str, float] = {}
    for round_ in range(args.rounds):
        for size in SIZES:
            line = []
            for contender in contenders:
                name = contender.receiver.name
                study = write_study(
                    templates[size], work / f"r{round_}-{size}-{name}", counts[size]
                )
                measured = measure(contender, study.root, study.count, study.uid, logs)
                rate, cpu_ms = measured or (0.0, 0.0)
                line.append(
                    f"{name} {rate:.1f} ({cpu_ms:.1f} ms cpu)" if rate else f"{name} FAILED"
                )
                key = f"{name} {size}"
                best[key] = max(best.get(key, 0.0), rate)
            print(f"round {round_ + 1} {size}: " + ", ".join(line), flush=True)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; print the best rates and the ratios to ``orthanc-nd``."""
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dicom-compare-")))
        contenders = start(args, work, stack)
        best = run(args, work, contenders)
    for key, rate in best.items():
        _name, size = key.split()
        reference = best.get(f"orthanc-nd {size}")
        ratio = f" ({rate / reference:.2f}x orthanc-nd)" if reference else ""
        print(f"best {key}: {rate:.1f}/s{ratio}")
    return 0 if all(best.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
