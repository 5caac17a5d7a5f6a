"""C-STORE acknowledgements while DICOMweb clients retrieve, against the same with none.

``python -m benchmarks.dicomweb_load [--clients 4] [--count 300] [--rounds 2]`` starts one listener
with DICOMweb on, stores a large study to serve, then sends fresh small studies with DCMTK's
storescu (one association, TCP_NODELAY=1), alternately alone and while ``--clients`` threads
retrieve the large study over and over. Prints the best rate of each and their ratio (the issue's
bar: loaded >= 0.8 x alone) and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

import requests

from benchmarks import dcmtk
from benchmarks.amqp import Topology
from benchmarks.corpus import large_template, small_template, write_study
from benchmarks.receivers import LISTENER_AE, free_port, start_listener


def _retrieve_forever(url: str, stop: threading.Event, served: list[int]) -> None:
    """Retrieve ``url`` until ``stop``; count the bytes received."""
    while not stop.is_set():
        with requests.get(url, stream=True, timeout=120) as response:
            response.raise_for_status()
            for chunk in response.iter_content(256 * 1024):
                served.append(len(chunk))
                if stop.is_set():
                    return


def _rate(port: int, work: Path, count: int, name: str) -> float:
    study = write_study(small_template(), work / name, count)
    sent = dcmtk.send(port, LISTENER_AE, [study.root], count, tcp_nodelay=True, log_dir=work)
    if sent.problem:
        raise RuntimeError(f"{name}: {sent.problem}")
    return count / sent.seconds


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    topology = Topology()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        http_port = free_port()
        listener = start_listener(
            work,
            name="listener",
            quiet_period=1.0,
            amqp=topology.listener_env(),
            extra={"LISTENER_DICOMWEB__ENABLED": "true", "LISTENER_DICOMWEB__PORT": str(http_port)},
        )
        try:
            listener.wait_ready()
            served_study = write_study(large_template(), work / "served", 100)
            stored = dcmtk.send(
                listener.port, LISTENER_AE, [served_study.root], 100, tcp_nodelay=True, log_dir=work
            )
            if stored.problem:
                raise RuntimeError(stored.problem)
            url = f"http://127.0.0.1:{http_port}/dicomweb/studies/{served_study.uid}"
            alone: list[float] = []
            loaded: list[float] = []
            served: list[int] = []
            for round_number in range(args.rounds):
                alone.append(_rate(listener.port, work, args.count, f"alone{round_number}"))
                stop = threading.Event()
                clients = [
                    threading.Thread(target=_retrieve_forever, args=(url, stop, served))
                    for _ in range(args.clients)
                ]
                for client in clients:
                    client.start()
                try:
                    loaded.append(_rate(listener.port, work, args.count, f"loaded{round_number}"))
                finally:
                    stop.set()
                    for client in clients:
                        client.join(timeout=60)
        finally:
            listener.stop()
            topology.delete()
    result = {
        "clients": args.clients,
        "instances": args.count,
        "alone_per_second": round(max(alone), 1),
        "loaded_per_second": round(max(loaded), 1),
        "ratio": round(max(loaded) / max(alone), 3),
        "served_mb": round(sum(served) / 1e6, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
