"""What :mod:`benchmarks.scale` compares, and how its results are kept and printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.report import RunRecord, rate_text, ratio_text


@dataclass(frozen=True)
class Deployment:
    """Listener processes started together on one journal: SQLite, or a fresh PostgreSQL database.

    ``nodes`` processes (each its own data_dir, ports and node_name) share the journal, which
    only PostgreSQL allows; each runs ``workers`` worker processes (``dicom.workers``).
    """

    name: str
    journal: str  # "sqlite" or "postgresql"
    workers: int = 1
    nodes: int = 1


@dataclass(frozen=True)
class Side:
    """One side of a ratio: a deployment, and how many of its nodes the associations go to."""

    label: str
    deployment: Deployment
    receiving_nodes: int = 1


@dataclass(frozen=True)
class Case:
    """A ratio: the candidate's best rate over the baseline's, same instances and associations."""

    ratio: str
    size: str
    associations: int
    baseline: Side
    candidate: Side

    @property
    def deployments(self) -> list[Deployment]:
        """The deployments this case runs (one when both sides share it)."""
        return list(dict.fromkeys([self.baseline.deployment, self.candidate.deployment]))


QUIET_PERIOD_SECONDS = 1.0
SQLITE = Deployment("sqlite", "sqlite")
POSTGRESQL = Deployment("postgresql", "postgresql")
SQLITE_W2 = Deployment("sqlite-w2", "sqlite", workers=2)
POSTGRESQL_W2 = Deployment("postgresql-w2", "postgresql", workers=2)
CLUSTER = Deployment("cluster", "postgresql", nodes=3)
NODE_ASSOCIATIONS = 6  # 2 per node of the cluster

CASES = (
    Case(
        "postgresql_over_sqlite_small_1assoc",
        "small",
        1,
        Side("sqlite", SQLITE),
        Side("postgresql", POSTGRESQL),
    ),
    Case(
        "postgresql_over_sqlite_large_1assoc",
        "large",
        1,
        Side("sqlite", SQLITE),
        Side("postgresql", POSTGRESQL),
    ),
    Case(
        "workers2_over_workers1_sqlite_large_4assoc",
        "large",
        4,
        Side("sqlite workers=1", SQLITE),
        Side("sqlite workers=2", SQLITE_W2),
    ),
    Case(
        "workers2_over_workers1_postgresql_large_4assoc",
        "large",
        4,
        Side("postgresql workers=1", POSTGRESQL),
        Side("postgresql workers=2", POSTGRESQL_W2),
    ),
    Case(
        "nodes3_over_nodes1_postgresql_large_6assoc",
        "large",
        NODE_ASSOCIATIONS,
        Side("1 node of 3", CLUSTER, receiving_nodes=1),
        Side("3 nodes", CLUSTER, receiving_nodes=3),
    ),
)


@dataclass
class Run:
    """One timed send: which side, the round, its rate and what it cost."""

    side: str
    round: int
    instances: int
    bytes: int
    seconds: float
    problem: str = ""
    instances_per_s: float | None = None
    stored_per_process: list[int] = field(default_factory=list)  # per worker, node by node
    commit_ms_per_process: list[float | None] = field(default_factory=list)  # mean journal commit
    cpu: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.problem and self.seconds > 0:
            self.instances_per_s = self.instances / self.seconds


@dataclass
class CaseResult:
    """Every run of one case and its ratio: best candidate rate over best baseline rate."""

    ratio_name: str
    size: str
    associations: int
    baseline: str
    candidate: str
    runs: list[Run] = field(default_factory=list)
    best_baseline: float | None = None
    best_candidate: float | None = None
    ratio: float | None = None

    def settle(self) -> None:
        """Best of the rounds for each side, and the ratio (None when a side never succeeded)."""
        self.best_baseline = _best(self.runs, self.baseline)
        self.best_candidate = _best(self.runs, self.candidate)
        if self.best_baseline and self.best_candidate:
            self.ratio = self.best_candidate / self.best_baseline


def _best(runs: list[Run], side: str) -> float | None:
    """The highest rate of ``side``'s successful runs."""
    rates = [run.instances_per_s for run in runs if run.side == side and run.instances_per_s]
    return max(rates) if rates else None


@dataclass
class ScaleResults(RunRecord):
    """Everything a scale run measured, as written to the JSON file."""

    cases: list[CaseResult] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    listeners: dict[str, Any] = field(default_factory=dict)  # exit code and log of each process


STORED = 'dicom_listener_instances_received_total{outcome="stored"}'
COMMIT_SUM, COMMIT_COUNT = (f"dicom_listener_journal_commit_seconds_{x}" for x in ("sum", "count"))


def process_deltas(
    before: list[dict[str, float]], after: list[dict[str, float]]
) -> tuple[list[int], list[float | None]]:
    """Per process, from its metrics before and after a send: instances stored, mean commit ms.

    The commit (the instance's journal transaction and the fsync that makes it durable, lock
    waits included) is where processes sharing one SQLite journal contend.
    """
    stored, commit_ms = [], []
    for old, new in zip(before, after, strict=True):
        stored.append(int(new.get(STORED, 0) - old.get(STORED, 0)))
        commits = new.get(COMMIT_COUNT, 0) - old.get(COMMIT_COUNT, 0)
        seconds = new.get(COMMIT_SUM, 0) - old.get(COMMIT_SUM, 0)
        commit_ms.append(round(1000 * seconds / commits, 2) if commits else None)
    return stored, commit_ms


def run_line(run: Run) -> str:
    """One run for the progress output: rate, split over the processes, CPU."""
    cpu = run.cpu
    return (
        f"  round {run.round} {run.side:<22} {rate_text(run.instances_per_s, 1):>7} inst/s"
        f"  stored per process {run.stored_per_process}"
        f" (commit ms {run.commit_ms_per_process})"
        f"  machine busy {cpu.get('machine_busy_percent', '?')}%"
        f" (steal {cpu.get('machine_steal_percent', '?')}%)"
        f"  CPU ms/inst: listener {cpu.get('listener_cpu_ms_per_instance', '?')}"
        f"  storescu {cpu.get('sender_cpu_ms_per_instance', '?')}"
        f"  postgresql {cpu.get('postgresql_cpu_ms_per_instance', '?')}"
        f"  rabbitmq {cpu.get('rabbitmq_cpu_ms_per_instance', '?')}"
        + (f"  FAILED: {run.problem}" if run.problem else "")
    )


def table(cases: list[CaseResult]) -> str:
    """One line per ratio: both sides' best rates and their quotient."""
    header = (
        f"{'ratio':<48}{'size':<7}{'assoc':>5}  {'baseline':<22}{'best/s':>8}  "
        f"{'candidate':<22}{'best/s':>8}{'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for case in cases:
        lines.append(
            f"{case.ratio_name:<48}{case.size:<7}{case.associations:>5}  {case.baseline:<22}"
            f"{rate_text(case.best_baseline, 1):>8}  {case.candidate:<22}"
            f"{rate_text(case.best_candidate, 1):>8}{ratio_text(case.ratio):>7}"
        )
    return "\n".join(lines)
