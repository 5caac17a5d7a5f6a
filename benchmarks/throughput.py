"""Throughput, memory and publish latency of the listener, next to storescp, Orthanc and a bare SCP.

``python -m benchmarks.throughput [--count N] [--large-count M] [--rss-study-count K] [--quick]
[--json PATH] [--orthanc PATH | --no-orthanc] [--workers W]`` generates its corpus, starts the
listener, DCMTK's storescp, Orthanc (when installed) and a bare pynetdicom SCP side by side, sends
to each with DCMTK's storescu (small and large instances, 1 and 4 associations, TCP_NODELAY=1 and
unset), the 4-association cells also to a listener with ``dicom.workers = W`` (``listener-wW``),
measures the listener's peak RSS and publish latency, prints a table and writes every number as
JSON. Exit status 1 when any measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import dcmtk, orthanc
from benchmarks.amqp import DEFAULT_URL, StudyReader, Topology, publication_problem
from benchmarks.corpus import PARTS, Study, Template, large_template, small_template, write_study
from benchmarks.receivers import (
    Receiver,
    peak_rss_kib,
    rss_kib,
    start_bare_scp,
    start_listener,
    start_orthanc,
    start_storescp,
    stop_listener,
    wait_workers_ready,
)
from benchmarks.report import (
    RUN_ERRORS,
    Cell,
    Results,
    load_average,
    machine_info,
    run_settings,
    scrape_metrics,
    set_ratios,
    summary_lines,
    table,
)

SIZES = ("small", "large")
ASSOCIATIONS = (1, PARTS)
TCP_NODELAY = (False, True)
QUIET_PERIOD_SECONDS = 1.0
LATENCY_INSTANCES = 10
WARM_UP_INSTANCES = 8
PUBLISH_TIMEOUT_SECONDS = 60.0
RSS_PUBLISH_TIMEOUT_SECONDS = 900.0
DEFAULT_JSON = Path(__file__).parent / "results.json"
DEFAULT_WORKERS = 2  # this 2-core machine's cores
FULL = {"count": 500, "large_count": 100, "rss_study_count": 10_000, "latency_runs": 3}
QUICK = {"count": 20, "large_count": 4, "rss_study_count": 50, "latency_runs": 1}

DESCRIPTION = (
    "Throughput, peak RSS and publish latency of the listener vs storescp, Orthanc and a bare SCP"
)

CellKey = tuple[str, int, bool]


@dataclass(frozen=True)
class Options:
    """What to run: corpus sizes, where to write the JSON, which broker to use."""

    count: int
    large_count: int
    rss_study_count: int
    latency_runs: int
    quick: bool
    json_path: Path
    amqp_url: str
    orthanc_binary: str | None  # None: no Orthanc receivers
    workers: int = DEFAULT_WORKERS  # of the listener-wW in the 4-association cells (0: none)


def parse_args(argv: list[str] | None) -> Options:
    """Options from the command line; ``--quick`` changes the defaults, not explicit values."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=DESCRIPTION
    )
    parser.add_argument("--count", type=int, help="small (~40 KB) instances per cell [500]")
    parser.add_argument("--large-count", type=int, help="large (~512 KB) instances per cell [100]")
    parser.add_argument("--rss-study-count", type=int, help="instances of the RSS study [10000]")
    parser.add_argument("--latency-runs", type=int, help="studies timed for publish latency [3]")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (20/4/50/1) for CI")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"[{DEFAULT_JSON}]")
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_AMQP_URL", DEFAULT_URL))
    parser.add_argument("--orthanc", help="the Orthanc executable [found on PATH or /usr/sbin]")
    parser.add_argument("--no-orthanc", action="store_true", help="leave Orthanc out")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="dicom.workers of the listener-wW sent the 4-association cells; 0: none"
        f" [{DEFAULT_WORKERS}]",
    )
    args = parser.parse_args(argv)
    sizes = {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in (QUICK if args.quick else FULL).items()
    }
    if min(sizes["count"], sizes["large_count"], sizes["rss_study_count"]) < PARTS:
        parser.error(f"every instance count must be at least {PARTS}")
    if sizes["latency_runs"] < 1:
        parser.error("--latency-runs must be at least 1")
    binary = None if args.no_orthanc else (args.orthanc or orthanc.find_binary() or "")
    return Options(
        **sizes,
        quick=args.quick,
        json_path=args.json,
        amqp_url=args.amqp_url,
        orthanc_binary=binary,
        workers=args.workers,
    )


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


class Benchmark:
    """One run; every process, file and broker object it creates is removed by ``stack``."""

    def __init__(self, options: Options, results: Results, stack: contextlib.ExitStack) -> None:
        self.options = options
        self.results = results
        self.stack = stack
        self.topology = Topology(options.amqp_url)
        self.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dicom-bench-")))
        self.logs = self.work / "storescu-logs"
        self.logs.mkdir()
        self.templates = {"small": small_template(), "large": large_template()}

    def run(self) -> None:
        """Measure everything, in order."""
        self.topology.check()
        self.stack.callback(self.topology.delete)
        studies = self._cell_studies()
        receivers = self._start_receivers()
        self._warm_up(receivers)
        for key, study in studies.items():
            for receiver in receivers:
                if receiver.workers == 1 or key[1] > 1:  # one association is one worker
                    self._measure(receiver, key, study)
        listener = next(r for r in receivers if r.name == "listener")
        self._latency(listener)
        self._finish_listener(listener)
        for extra in receivers:
            if extra.workers > 1:
                self._stop_and_check(extra, self.results.listener_workers)
        self._rss_study()

    # -- corpus and receivers ---------------------------------------------------------------

    def _study(self, size: str, name: str, count: int) -> Study:
        """A new study of ``count`` instances of ``size`` under the corpus directory."""
        template: Template = self.templates[size]
        return write_study(template, self.work / "corpus" / name, count)

    def _cell_studies(self) -> dict[CellKey, Study]:
        """One fresh study per cell, shared by the receivers (each keeps its own state)."""
        counts = {"small": self.options.count, "large": self.options.large_count}
        progress(f"generating corpus in {self.work}")
        studies = {
            (size, associations, nodelay): self._study(
                size, f"{size}-{associations}-{int(nodelay)}", counts[size]
            )
            for size, associations, nodelay in itertools.product(SIZES, ASSOCIATIONS, TCP_NODELAY)
        }
        self.results.settings["small_instance_bytes"] = len(self.templates["small"].data)
        self.results.settings["large_instance_bytes"] = len(self.templates["large"].data)
        return studies

    def _started(self, receiver: Receiver) -> Receiver:
        """Register ``receiver`` for stopping, then wait until it answers C-ECHO."""
        self.stack.callback(receiver.stop)
        receiver.wait_ready()
        return receiver

    def _start_listener(self, name: str, workers: int = 1) -> Receiver:
        """A listener process on this run's topology, with ``workers`` receiving processes."""
        listener = start_listener(
            self.work,
            name=name,
            quiet_period=QUIET_PERIOD_SECONDS,
            amqp=self.topology.listener_env(),
            extra={"LISTENER_DICOM__WORKERS": str(workers)},
        )
        listener.workers = workers
        self._started(listener)
        if workers > 1:
            wait_workers_ready(listener, workers)
        return listener

    def _start_orthancs(self) -> list[Receiver]:
        """Both Orthancs, or none (with a note saying why) when its binary is not there."""
        binary = self.options.orthanc_binary
        if binary is None:
            self.results.skipped.append("orthanc, orthanc-nd: --no-orthanc")
            return []
        if not binary or not os.access(binary, os.X_OK):
            self.results.skipped.append(
                f"orthanc, orthanc-nd: no Orthanc executable ({binary or 'not on PATH'});"
                " apt-get install orthanc to compare with it"
            )
            return []
        return [
            self._started(start_orthanc(self.work, tcp_nodelay=nodelay, binary=binary))
            for nodelay in TCP_NODELAY
        ]

    def _start_receivers(self) -> list[Receiver]:
        """Both storescps, the listener, both Orthancs and the bare SCP, all running at once."""
        receivers = [
            self._started(start_storescp(self.work, tcp_nodelay=False)),
            self._started(start_storescp(self.work, tcp_nodelay=True)),
            self._start_listener("listener"),
            *self._start_orthancs(),
            self._started(start_bare_scp(self.work)),
        ]
        workers = self.options.workers
        if workers > 1:
            receivers.insert(3, self._start_listener(f"listener-w{workers}", workers))
        self.results.listener["rss_after_start_kib"] = rss_kib(receivers[2].process.pid)
        progress("receivers ready: " + ", ".join(f"{r.name} :{r.port}" for r in receivers))
        return receivers

    def _warm_up(self, receivers: list[Receiver]) -> None:
        """Probe TCP_NODELAY handling, then send one small study to each receiver, unmeasured."""
        study = self._study("small", "warm-up", WARM_UP_INSTANCES)
        probe = dcmtk.probe_nagle(receivers[-1].port, receivers[-1].called_ae, study.parts[0])
        self.results.tcp_nodelay = {**asdict(probe), "conclusion": probe.conclusion}
        for receiver in receivers:
            problem = self._send(receiver, study, 1, tcp_nodelay=True).problem
            problem = problem or self._verify(receiver, study)
            if problem:
                raise RuntimeError(f"warm-up send to {receiver.name} failed: {problem}")

    # -- measurements -------------------------------------------------------------------------

    def _send(
        self, receiver: Receiver, study: Study, associations: int, *, tcp_nodelay: bool
    ) -> dcmtk.Send:
        """Send ``study`` to ``receiver`` over 1 association, or one per part directory."""
        sources = [study.root] if associations == 1 else study.parts
        return dcmtk.send(
            receiver.port,
            receiver.called_ae,
            sources,
            study.count,
            tcp_nodelay=tcp_nodelay,
            log_dir=self.logs,
        )

    def _measure(self, receiver: Receiver, key: CellKey, study: Study) -> None:
        """Time one send and check that every instance arrived; record the cell."""
        size, associations, nodelay = key
        send = self._send(receiver, study, associations, tcp_nodelay=nodelay)
        cell = Cell(
            receiver.name,
            size,
            associations,
            nodelay,
            study.count,
            study.size_bytes,
            send.seconds,
            send.problem,
        )
        problem = send.problem or self._verify(receiver, study)
        if problem:
            cell.fail(problem)
            self.results.problems.append(f"{receiver.name} {key}: {problem}")
        self.results.cells.append(cell)
        rate = "FAILED" if cell.instances_per_s is None else f"{cell.instances_per_s:.1f} inst/s"
        progress(f"{receiver.name:<9} {size} x{associations} TCP_NODELAY={int(nodelay)}: {rate}")

    def _verify(self, receiver: Receiver, study: Study) -> str:
        """Check beyond storescu's responses: storescp's files, Orthanc's index, ImagingStudy."""
        if receiver.output_dir is not None:
            return _count_and_clear(receiver.output_dir, study.count)
        if receiver.http_port is not None:
            found = orthanc.study_instance_count(receiver.http_port, study.uid)
            return "" if found == study.count else f"Orthanc holds {found}/{study.count} instances"
        if receiver.publishes_studies:
            with StudyReader(self.topology) as reader:
                arrived = reader.wait([study.uid], timeout=PUBLISH_TIMEOUT_SECONDS)
            return publication_problem(arrived.get(study.uid), study.count, PUBLISH_TIMEOUT_SECONDS)
        return ""

    def _latency(self, listener: Receiver) -> None:
        """Time from storescu's exit to the study's ImagingStudy arriving on the queue."""
        samples: list[float] = []
        for run in range(self.options.latency_runs):
            study = self._study("small", f"latency-{run}", LATENCY_INSTANCES)
            with StudyReader(self.topology) as reader:
                send = self._send(listener, study, 1, tcp_nodelay=True)
                arrived = reader.wait([study.uid], timeout=PUBLISH_TIMEOUT_SECONDS)
            if send.problem or study.uid not in arrived:
                self.results.problems.append(f"latency run {run}: {send.problem or 'no message'}")
                continue
            samples.append(arrived[study.uid].at - send.finished_at)
        self.results.latency = {
            "quiet_period_seconds": QUIET_PERIOD_SECONDS,
            "instances_per_study": LATENCY_INSTANCES,
            "samples_seconds": samples,
            "median_seconds": statistics.median(samples) if samples else None,
            "measured": "storescu exit (after the last C-STORE response and the release) to "
            "the ImagingStudy being delivered to a consumer of the queue",
        }

    def _finish_listener(self, listener: Receiver) -> None:
        """Record the listener's peak RSS, metrics, exit code and log; flag anything wrong."""
        info = self.results.listener
        info["peak_rss_kib"] = peak_rss_kib(listener.process.pid)
        assert listener.metrics_port is not None
        info["metrics"] = scrape_metrics(listener.metrics_port)
        self._stop_and_check(listener, info)
        unexpected = {
            name: value
            for name, value in info["metrics"].items()
            if "instances_received_total" in name and 'outcome="stored"' not in name and value
        }
        if unexpected:
            self.results.problems.append(f"listener outcomes other than stored: {unexpected}")

    def _stop_and_check(self, listener: Receiver, info: dict[str, Any]) -> None:
        """Stop ``listener`` with SIGTERM; record its exit code and log summary."""
        problem = stop_listener(listener, info)
        if problem:
            self.results.problems.append(problem)

    def _rss_study(self) -> None:
        """Peak RSS of a fresh listener receiving one study of K instances in one association."""
        count = self.options.rss_study_count
        progress(f"RSS study: generating {count} instances")
        study = self._study("small", "rss-study", count)
        listener = self._start_listener("listener-rss")
        info = self.results.rss_study
        info.update(instances=count, peak_rss_before_kib=peak_rss_kib(listener.process.pid))
        send = self._send(listener, study, 1, tcp_nodelay=True)
        with StudyReader(self.topology) as reader:
            record = reader.wait([study.uid], timeout=RSS_PUBLISH_TIMEOUT_SECONDS).get(study.uid)
        info["peak_rss_kib"] = peak_rss_kib(listener.process.pid)
        info["send_seconds"] = send.seconds
        info["instances_per_s"] = None if send.problem else count / send.seconds
        if record is not None:
            info["published_instance_count"] = record.instance_count
            info["message_bytes"] = record.body_bytes
            info["publish_seconds_after_send"] = record.at - send.finished_at
        problem = send.problem or publication_problem(record, count, RSS_PUBLISH_TIMEOUT_SECONDS)
        if problem:
            self.results.problems.append(f"RSS study: {problem}")
        self._stop_and_check(listener, info)


def _count_and_clear(directory: Path, expected: int) -> str:
    """Check ``directory`` holds ``expected`` files, then empty it; a problem or ""."""
    found = sum(1 for path in directory.rglob("*") if path.is_file())
    shutil.rmtree(directory)
    directory.mkdir()
    return "" if found == expected else f"{found}/{expected} files written"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and summary; write the JSON file."""
    options = parse_args(argv)
    started = time.monotonic()
    settings = run_settings(options, quiet_period_seconds=QUIET_PERIOD_SECONDS)
    results = Results(machine=machine_info(dcmtk.version()), settings=settings)
    try:
        with contextlib.ExitStack() as stack:
            Benchmark(options, results, stack).run()
    except RUN_ERRORS as error:
        results.error = repr(error)
    set_ratios(results.cells)
    results.wall_seconds = time.monotonic() - started
    results.machine["load_average_at_end"] = load_average()
    print(table(results.cells))
    print("\n".join(summary_lines(results)))
    results.write(options.json_path)
    print(f"results written to {options.json_path}")
    return 1 if results.problems or results.error else 0


if __name__ == "__main__":
    sys.exit(main())
