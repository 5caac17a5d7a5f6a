"""Scale-out ratios from one run: PostgreSQL vs SQLite, dicom.workers 2 vs 1, three nodes vs one.

``python -m benchmarks.scale [--count N] [--large-count M] [--rounds R] [--quick] [--json PATH]
[--postgres URL] [--amqp-url URL]`` starts, case by case, the listener deployments it compares
(SQLite; PostgreSQL in a fresh database it creates and drops; ``dicom.workers = 2``; three nodes
on one database and one queue), sends fresh studies with DCMTK's storescu (``TCP_NODELAY=1``),
alternating baseline and candidate for R rounds, and reports each side's best rate and their
ratio. A run counts only when every C-STORE got a success response and the study's one
ImagingStudy message lists every instance. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks import dcmtk
from benchmarks.amqp import DEFAULT_URL
from benchmarks.postgres import DEFAULT_SERVER
from benchmarks.report import RUN_ERRORS, load_average, machine_info, run_settings
from benchmarks.scale_cases import CASES, QUIET_PERIOD_SECONDS, ScaleResults, table
from benchmarks.scale_run import ScaleBenchmark

DEFAULT_JSON = Path(__file__).parent / "scale-results.json"
FULL = {"count": 1000, "large_count": 300, "rounds": 2}
QUICK = {"count": 24, "large_count": 12, "rounds": 1}
SCALE_ERRORS: tuple[type[BaseException], ...] = (*RUN_ERRORS, psycopg.Error)


@dataclass(frozen=True)
class Options:
    """What to run: instances per send, rounds, where the services are, where the JSON goes."""

    count: int
    large_count: int
    rounds: int
    quick: bool
    json_path: Path
    amqp_url: str
    postgres: str  # postgresql://user@host:port, where the benchmark creates its databases
    only: tuple[str, ...] = ()  # ratio keys to measure; empty: all


def parse_args(argv: list[str] | None) -> Options:
    """Options from the command line; ``--quick`` changes the defaults, not explicit values."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--count", type=int, help="small instances per send [1000]")
    parser.add_argument("--large-count", type=int, help="large instances per send [300]")
    parser.add_argument("--rounds", type=int, help="rounds per case, baseline then candidate [2]")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (24/12, 1 round) for CI")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"[{DEFAULT_JSON}]")
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_AMQP_URL", DEFAULT_URL))
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_SERVER),
        help=f"PostgreSQL server (user may CREATE DATABASE) [{DEFAULT_SERVER}]",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=[case.ratio for case in CASES],
        help="measure this ratio only (repeatable) [all]",
    )
    args = parser.parse_args(argv)
    sizes = {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in (QUICK if args.quick else FULL).items()
    }
    widest = max(case.associations for case in CASES if case.ratio in args.only or not args.only)
    if min(sizes["count"], sizes["large_count"]) < widest:
        parser.error(f"every instance count must be at least {widest} (one per association)")
    if sizes["rounds"] < 1:
        parser.error("--rounds must be at least 1")
    return Options(
        **sizes,
        quick=args.quick,
        json_path=args.json,
        amqp_url=args.amqp_url,
        postgres=args.postgres,
        only=tuple(args.only),
    )


def main(argv: list[str] | None = None) -> int:
    """Run every case; print the table and the problems; write the JSON file."""
    options = parse_args(argv)
    started = time.monotonic()
    settings = run_settings(options, quiet_period_seconds=QUIET_PERIOD_SECONDS)
    results = ScaleResults(machine=machine_info(dcmtk.version()), settings=settings)
    try:
        with contextlib.ExitStack() as stack:
            ScaleBenchmark(options, results, stack).run()
    except SCALE_ERRORS as error:
        results.error = repr(error)
    results.ratios = {case.ratio_name: case.ratio for case in results.cases}
    results.wall_seconds = time.monotonic() - started
    results.machine["load_average_at_end"] = load_average()
    print(table(results.cases))
    print("\n".join(f"PROBLEM: {problem}" for problem in results.problems))
    if results.error:
        print(f"ERROR: {results.error}")
    print(
        f"wall time {results.wall_seconds:.0f} s; load average at start "
        f"{results.machine['load_average_at_start']}, at end {load_average()}"
    )
    results.write(options.json_path)
    print(f"results written to {options.json_path}")
    failed = results.problems or results.error or None in results.ratios.values()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
