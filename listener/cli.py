"""Command line: ``dicom-listener [--config PATH] [run | check-config]``.

A configuration problem prints one line naming the key and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from listener import __version__
from listener.config import ConfigError, LoadedSettings, describe, load_settings, mask_url
from listener.logging import configure_logging, get_logger
from listener.publisher import PikaPublisher
from listener.service import ListenerService

EXIT_CONFIG = 2


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the listener in the foreground (the default)")
    commands.add_parser("check-config", help="validate the settings and print the effective values")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicom-listener`` console script."""
    args = _parser().parse_args(argv)
    try:
        loaded = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"dicom-listener: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        return _check_config(loaded)
    return _run(loaded)


def _check_config(loaded: LoadedSettings) -> int:
    settings = loaded.settings
    for key, _default, _doc in describe():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(settings, section), name)
        shown = mask_url(value) if key == "amqp.url" else value
        print(f"{key} = {shown!r}  # {loaded.sources[key]}")
    return 0


def _run(loaded: LoadedSettings) -> int:
    settings = loaded.settings
    configure_logging(level=settings.logging.level, output_format=settings.logging.format)
    log = get_logger("listener")
    amqp = settings.amqp
    publisher = PikaPublisher(
        amqp.url, exchange=amqp.exchange, routing_key=amqp.routing_key, queue=amqp.queue
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    service = ListenerService(settings, publisher=publisher)
    try:
        service.start()
    except OSError as exc:
        log.error("cannot start", error=str(exc))
        service.stop(grace_seconds=0)
        return 1
    log.info("listener started", version=__version__, broker=mask_url(amqp.url))
    stop.wait()
    service.stop()
    return 0
