"""The runs of :mod:`benchmarks.scale`: start each case's deployments, warm up, alternate, check."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import cpu, dcmtk
from benchmarks.amqp import StudyReader, Topology, publication_problem
from benchmarks.corpus import Study, large_template, small_template, write_study
from benchmarks.postgres import database_url, fresh_database
from benchmarks.receivers import (
    LISTENER_AE,
    STOP_TIMEOUT_SECONDS,
    Receiver,
    start_listener,
    start_ready,
    stop_listener,
    wait_workers_ready,
    worker_metrics,
)
from benchmarks.scale_cases import (
    CASES,
    QUIET_PERIOD_SECONDS,
    Case,
    CaseResult,
    Deployment,
    Run,
    ScaleResults,
    Side,
    process_deltas,
    run_line,
)

if TYPE_CHECKING:
    from benchmarks.scale import Options

PUBLISH_TIMEOUT_SECONDS = 120.0
WARM_UP_INSTANCES = 12
LATE_MESSAGE_SECONDS = QUIET_PERIOD_SECONDS + 2.0  # a second message for a study would come by then


@dataclass(frozen=True)
class Sent:
    """One send checked: its duration, why it does not count ("" when it does), its CPU costs."""

    seconds: float
    problem: str
    cpu: dict[str, float]


def progress(message: str) -> None:
    """One progress line on stderr, after the time of day."""
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


class ScaleBenchmark:
    """One run; every process, database, file and broker object it creates is removed."""

    def __init__(
        self, options: Options, results: ScaleResults, stack: contextlib.ExitStack
    ) -> None:
        self.options = options
        self.results = results
        self.stack = stack
        self.topology = Topology(options.amqp_url)
        self.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dicom-scale-")))
        self.logs = self.work / "storescu-logs"
        self.logs.mkdir()
        self.templates = {"small": small_template(), "large": large_template()}
        self.counts = {"small": options.count, "large": options.large_count}
        self.messages: collections.Counter[str] = collections.Counter()  # ImagingStudy messages
        self.cases = [case for case in CASES if case.ratio in options.only or not options.only]

    def run(self) -> None:
        """Every case in turn; a deployment runs from the first case needing it to the last."""
        self.topology.check()
        self.stack.callback(self.topology.delete)
        running: dict[Deployment, tuple[contextlib.ExitStack, list[Receiver]]] = {}
        self.stack.callback(_stop_all, running)
        for index, case in enumerate(self.cases):
            for deployment in case.deployments:
                if deployment not in running:
                    running[deployment] = self._deploy(deployment)
            result = CaseResult(
                case.ratio, case.size, case.associations, case.baseline.label, case.candidate.label
            )
            self.results.cases.append(result)
            self._case(case, result, {d: nodes for d, (_, nodes) in running.items()})
            result.settle()
            later = {d for later in self.cases[index + 1 :] for d in later.deployments}
            for deployment in [d for d in running if d not in later]:
                running.pop(deployment)[0].close()

    def _case(
        self, case: Case, result: CaseResult, running: dict[Deployment, list[Receiver]]
    ) -> None:
        """Alternate the sides for the rounds, then check one message per study."""
        progress(f"{case.ratio}: {case.baseline.label} vs {case.candidate.label}")
        sent = []
        for round_index in range(self.options.rounds):
            for side in (case.baseline, case.candidate):
                run, study = self._measure(case, side, running[side.deployment], round_index)
                result.runs.append(run)
                sent.append(study)
                progress(run_line(run))
        self._check_one_message_each(case.ratio, sent)

    # -- deployments ---------------------------------------------------------------------------

    def _deploy(self, deployment: Deployment) -> tuple[contextlib.ExitStack, list[Receiver]]:
        """Start and warm up the deployment's nodes (after its database); closing stops them."""
        with contextlib.ExitStack() as stack:
            nodes = self._start_nodes(deployment, stack)
            self._check_one_message_each(deployment.name, [self._warm_up(nodes, deployment)])
            progress(f"  {deployment.name} warmed up")
            return stack.pop_all(), nodes

    def _start_nodes(self, deployment: Deployment, stack: contextlib.ExitStack) -> list[Receiver]:
        """Start the deployment's nodes (after its database); each stopped when ``stack`` closes."""
        extra = {"LISTENER_DICOM__WORKERS": str(deployment.workers)}
        if deployment.journal == "postgresql":
            server = self.options.postgres
            admin = database_url(server, "postgres")
            name = stack.enter_context(fresh_database(admin, prefix="bench_scale"))
            extra["LISTENER_STORAGE__DATABASE_URL"] = database_url(server, name)
        with concurrent.futures.ThreadPoolExecutor(deployment.nodes) as pool:
            starts = [
                pool.submit(self._start_node, deployment, index, extra)
                for index in range(deployment.nodes)
            ]
            concurrent.futures.wait(starts)
        nodes = [start.result() for start in starts if not start.exception()]
        stack.callback(self._stop_nodes, nodes)
        for start in starts:
            start.result()  # the first failure, if any, once every started node will be stopped
        progress(f"  {deployment.name} ready: ports {[node.port for node in nodes]}")
        return nodes

    def _start_node(self, deployment: Deployment, index: int, extra: dict[str, str]) -> Receiver:
        """One listener process of ``deployment`` (own data_dir, ports, node_name), all ready."""
        node_name = f"{deployment.name}-node{index}"
        settings = {**extra, "LISTENER_STORAGE__NODE_NAME": node_name}
        node = start_ready(
            lambda attempt: start_listener(
                self.work,
                name=f"{node_name}-{attempt}",
                quiet_period=QUIET_PERIOD_SECONDS,
                amqp=self.topology.listener_env(),
                extra=settings,
            )
        )
        try:
            wait_workers_ready(node, deployment.workers)
        except RuntimeError:
            node.stop()
            raise
        return node

    def _stop_nodes(self, nodes: list[Receiver]) -> None:
        """SIGTERM to every node at once, then record each exit code and log; flag what is wrong."""
        for node in nodes:
            node.process.terminate()
        for node in nodes:  # a second SIGTERM would cut the drain short: let each exit first
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            problem = stop_listener(node, self.results.listeners.setdefault(node.name, {}))
            if problem:
                self.results.problems.append(problem)

    # -- sends ---------------------------------------------------------------------------------

    def _warm_up(self, nodes: list[Receiver], deployment: Deployment) -> Study:
        """One small study over associations to every node (and so, likely, every worker)."""
        associations = 2 * deployment.workers * len(nodes)
        study = write_study(
            self.templates["small"],
            self.work / "corpus" / f"warm-up-{deployment.name}",
            max(WARM_UP_INSTANCES, associations),
            parts=associations,
        )
        problem = self._send_and_wait(study, [node.port for node in nodes]).problem
        if problem:
            raise RuntimeError(f"warm-up of {deployment.name} failed: {problem}")
        return study

    def _measure(
        self, case: Case, side: Side, nodes: list[Receiver], round_index: int
    ) -> tuple[Run, Study]:
        """Time one fresh study sent to ``side``; check its ImagingStudy; record the costs."""
        name = f"{case.ratio}-{side.deployment.name}-{side.receiving_nodes}-{round_index}"
        study = write_study(
            self.templates[case.size],
            self.work / "corpus" / name,
            self.counts[case.size],
            parts=case.associations,
        )
        workers = side.deployment.workers
        before = [sample for node in nodes for sample in worker_metrics(node, workers)]
        ports = [node.port for node in nodes[: side.receiving_nodes]]
        sent = self._send_and_wait(study, ports, pids=[node.process.pid for node in nodes])
        after = [sample for node in nodes for sample in worker_metrics(node, workers)]
        problem = sent.problem
        run = Run(side.label, round_index, study.count, study.size_bytes, sent.seconds, problem)
        run.cpu = sent.cpu
        run.stored_per_process, run.commit_ms_per_process = process_deltas(before, after)
        if problem:
            self.results.problems.append(
                f"{case.ratio} {side.label} round {round_index}: {problem}"
            )
        return run, study

    def _send_and_wait(self, study: Study, ports: list[int], pids: list[int] | None = None) -> Sent:
        """Send the parts over ``ports`` in turn; wait for the ImagingStudy; delete the files."""
        with StudyReader(self.topology) as reader:
            before = cpu.sample(pids or [])
            send = dcmtk.send(
                ports, LISTENER_AE, study.parts, study.count, tcp_nodelay=True, log_dir=self.logs
            )
            usage = cpu.usage(before, cpu.sample(pids or []), study.count)
            record = reader.wait([study.uid], timeout=PUBLISH_TIMEOUT_SECONDS).get(study.uid)
            self.messages.update(reader.messages)
        shutil.rmtree(study.root)
        problem = send.problem or publication_problem(record, study.count, PUBLISH_TIMEOUT_SECONDS)
        return Sent(send.seconds, problem, usage)

    def _check_one_message_each(self, what: str, studies: list[Study]) -> None:
        """After a wait for late messages: exactly one ImagingStudy message per study sent."""
        with StudyReader(self.topology) as reader:
            reader.drain(LATE_MESSAGE_SECONDS)
            self.messages.update(reader.messages)
        for study in studies:
            if self.messages[study.uid] != 1:
                self.results.problems.append(
                    f"{what}: {self.messages[study.uid]} messages for study {study.uid}"
                )


def _stop_all(running: dict[Deployment, tuple[contextlib.ExitStack, list[Receiver]]]) -> None:
    """Stop the deployments still running (after an error)."""
    for stack, _ in running.values():
        stack.close()
