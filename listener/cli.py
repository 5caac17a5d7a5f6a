"""Command line: ``dicom-listener [--config PATH] COMMAND``.

Commands: ``run`` (the default), ``check-config``, ``echo``, ``studies``, ``republish``,
``migrate-journal``. A
configuration problem prints one line naming the key and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from listener import __version__, admin, journal_migrate
from listener.config import (
    ConfigError,
    LoadedSettings,
    Settings,
    broker_url,
    load_settings,
    mask_url,
)
from listener.config import report as config_report
from listener.journal_api import JournalError
from listener.logs import configure_logging, get_logger
from listener.publisher import (
    PikaPublisher,
    Publisher,
    PublishError,
    TopologyMismatch,
    broker_tls_context,
)
from listener.scp import client_tls_context, verify
from listener.service import ListenerService
from listener.sinks import DirectorySink, StdoutSink
from listener.startup import (
    STARTUP_ERRORS,
    end_with_parent,
    restrict_permissions,
    startup_problem,
)
from listener.workers import WorkerJob, supervise

EXIT_FAILURE, EXIT_CONFIG = 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-listener",
        description="DICOM listener publishing one FHIR ImagingStudy per study to RabbitMQ.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML settings file; LISTENER_<SECTION>__<KEY> environment variables override it",
    )
    parser.add_argument(
        "--output",
        metavar="stdout|DIR",
        help="no broker: print each ImagingStudy as a JSON line (stdout) or write it to DIR "
        "(sets output.kind and output.directory)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the listener in the foreground (the default)")
    commands.add_parser(
        "check-config",
        help="validate the settings; print each effective value and where it came from",
    )
    echo = commands.add_parser("echo", help="send a C-ECHO (a DICOM ping); exit 0 on success")
    echo.add_argument("host", nargs="?", help="default: this listener (127.0.0.1)")
    echo.add_argument("port", nargs="?", type=int, help="default: dicom.port")
    echo.add_argument("--called-ae", help="default: dicom.ae_title")
    echo.add_argument("--calling-ae", default="ECHOSCU", help="our AE title (default ECHOSCU)")
    echo.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    echo.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use DICOM TLS (default: when dicom.tls.cert_file is set); client certificate and "
        "CA from [dicom.tls]",
    )
    echo.add_argument(
        "--no-verify",
        action="store_true",
        help="with TLS, do not verify the server's certificate (a loopback health check)",
    )
    studies = commands.add_parser(
        "studies", help="list pending and recently finished studies from the journal"
    )
    studies.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    republish = commands.add_parser(
        "republish", help="publish studies again, each as a new resource version"
    )
    republish.add_argument("study_uids", nargs="+", metavar="UID", help="StudyInstanceUIDs")
    migrate = commands.add_parser(
        "migrate-journal",
        help="copy the SQLite journal of storage.data_dir into an empty PostgreSQL journal "
        "(stop the listener first)",
        description="Copy the SQLite journal of storage.data_dir (pending and published studies, "
        "instance records, MPPS, stale files, the outbox) into an empty PostgreSQL journal, in "
        "one transaction. Stop the listener first; afterwards set storage.database_url to URL "
        "and start it. Exit 2 if the database already holds journal data.",
    )
    migrate.add_argument(
        "--to", metavar="URL", help="postgresql://user@host:port/db (default: storage.database_url)"
    )
    migrate.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        help="file holding the database password (default: storage.database_password_file)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicom-listener`` console script."""
    args = _parser().parse_args(argv)
    try:
        loaded = load_settings(args.config, _with_output_option(os.environ, args.output))
    except ConfigError as exc:
        print(f"dicom-listener: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        return _check_config(loaded)
    if args.command == "echo":
        return _echo(loaded, args)
    if args.command in ("studies", "republish"):
        return _journal_command(loaded, args)
    if args.command == "migrate-journal":
        return _migrate_journal(loaded, args)
    return _run(loaded)


def _with_output_option(environ: Mapping[str, str], output: str | None) -> dict[str, str]:
    """The environment with ``--output`` applied (it wins over the file and the environment)."""
    merged = dict(environ)
    if output == "stdout":
        merged["LISTENER_OUTPUT__KIND"] = "stdout"
    elif output:
        merged["LISTENER_OUTPUT__KIND"] = "directory"
        merged["LISTENER_OUTPUT__DIRECTORY"] = output
    return merged


def make_publisher(settings: Settings) -> Publisher:
    """The destination ``output.kind`` names: RabbitMQ, a directory or standard output."""
    output = settings.output
    if output.kind == "stdout":
        return StdoutSink()
    if output.kind == "directory":
        return DirectorySink(Path(output.directory))
    amqp = settings.amqp
    tls = (
        broker_tls_context(
            ca_file=amqp.tls.ca_file, cert_file=amqp.tls.cert_file, key_file=amqp.tls.key_file
        )
        if amqp.url.startswith("amqps://")
        else None
    )
    return PikaPublisher(
        broker_url(amqp),
        exchange=amqp.exchange,
        routing_key=amqp.routing_key,
        queue=amqp.queue,
        queue_type=amqp.queue_type,
        tls=tls,
    )


def _check_config(loaded: LoadedSettings) -> int:
    for line in config_report.settings_lines(loaded.settings, loaded.sources):
        print(line)
    for warning in config_report.host_warnings(loaded.settings):
        print(f"dicom-listener: warning: {warning}", file=sys.stderr)
    return 0


def _echo(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    dicom = loaded.settings.dicom
    host = args.host or "127.0.0.1"
    port = args.port or dicom.port
    called = args.called_ae or dicom.ae_title
    use_tls = bool(dicom.tls.cert_file) if args.tls is None else args.tls
    tls = client_tls_context(dicom.tls) if use_tls else None
    if tls is not None and args.no_verify:
        tls.verify_mode = ssl.CERT_NONE
    try:
        status = verify(
            host, port, called_ae=called, calling_ae=args.calling_ae, timeout=args.timeout, tls=tls
        )
    except ConnectionError as exc:
        print(f"dicom-listener: C-ECHO failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"C-ECHO {called}@{host}:{port}: status 0x{status:04X}")
    return 0 if status == 0 else EXIT_FAILURE


def _journal_command(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    try:
        journal = admin.open_journal(loaded.settings)
    except FileNotFoundError as exc:
        print(f"dicom-listener: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if args.command == "studies":
            for line in admin.studies_table(journal.list_studies(limit=args.limit)):
                print(line)
            return 0
        failures = admin.republish(
            journal, loaded.settings, args.study_uids, report=lambda line: print(line, flush=True)
        )
        return EXIT_FAILURE if failures else 0
    finally:
        journal.close()


def _migrate_journal(loaded: LoadedSettings, args: argparse.Namespace) -> int:
    storage = loaded.settings.storage
    url = args.to or storage.database_url
    if not url:
        print("dicom-listener: migrate-journal needs --to postgresql://...", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = journal_migrate.migrate_journal(storage, url, password_file=args.password_file)
    except journal_migrate.REFUSALS as exc:
        print(f"dicom-listener: migrate-journal refused: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JournalError as exc:
        print(f"dicom-listener: migrate-journal failed, nothing copied: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for warning in journal_migrate.warnings(report):
        print(f"dicom-listener: warning: {warning}", file=sys.stderr)
    for line in journal_migrate.summary(storage, url, report):
        print(line)
    return 0


def _run(loaded: LoadedSettings) -> int:
    settings = loaded.settings
    _configure_logging(settings)
    publisher = make_publisher(settings)
    mismatch = _topology_mismatch(publisher)
    if mismatch:
        print(f"dicom-listener: configuration error: {mismatch}", file=sys.stderr)
        return EXIT_CONFIG
    stop = _stop_on_signals()
    if settings.dicom.workers > 1:
        return supervise(settings, stop, _work)
    return _serve(settings, publisher, stop)


def _configure_logging(settings: Settings, **fields: object) -> None:
    logging = settings.logging
    configure_logging(
        level=logging.level,
        output_format=logging.format,
        include_phi=logging.include_phi,
        fields=fields,
    )


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (handled in this process from now on)."""
    log = get_logger("listener")
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _serve(
    settings: Settings,
    publisher: Publisher,
    stop: threading.Event,
    *,
    worker: WorkerJob | None = None,
) -> int:
    """Run the listener until ``stop`` is set: the whole of ``run``, or one worker of it."""
    data_dir = settings.storage.data_dir
    try:
        restrict_permissions(data_dir)
        service = ListenerService(
            settings,
            publisher=publisher,
            spool_dir=worker.spool_dir if worker else None,
            worker_index=worker.index if worker else 0,
            listening=worker.listening if worker else None,
        )
    except STARTUP_ERRORS as exc:
        print(f"dicom-listener: {startup_problem(exc, data_dir)}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        service.start()
    except STARTUP_ERRORS as exc:
        service.stop(grace_seconds=0)
        print(f"dicom-listener: {startup_problem(exc, data_dir)}", file=sys.stderr)
        return EXIT_FAILURE
    get_logger("listener").info(
        "listener started", version=__version__, output=_output_description(settings)
    )
    if worker is not None:
        worker.ready.send(True)
    stop.wait()
    service.stop()
    return 0


def _work(job: WorkerJob) -> None:
    """One worker process: a listener on the shared port until SIGTERM (or its parent's death)."""
    end_with_parent(job.parent_pid)
    settings = job.settings
    _configure_logging(settings, worker=job.index)
    stop = _stop_on_signals()
    sys.exit(_serve(settings, make_publisher(settings), stop, worker=job))


def _topology_mismatch(publisher: Publisher) -> str | None:
    """Why the broker's queue or exchange cannot be used as configured (checked once at start).

    A broker that does not answer is no reason to stop: the outbox keeps what is finished.
    """
    if not isinstance(publisher, PikaPublisher):
        return None
    try:
        publisher.connect()
    except TopologyMismatch as exc:
        return str(exc)
    except PublishError:
        return None
    finally:
        publisher.close()  # the publish thread opens its own connection
    return None


def _output_description(settings: Settings) -> str:
    """Where ImagingStudy messages go, safe to log (the broker password masked)."""
    output = settings.output
    if output.kind == "amqp":
        return mask_url(settings.amqp.url)
    return output.directory if output.kind == "directory" else "stdout"
