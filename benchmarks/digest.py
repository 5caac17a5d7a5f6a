"""Cost of the content digest per received instance (``listener.instance_files.content_digest``).

``python -m benchmarks.digest [--count N]`` writes the benchmark's large CT instance (~525 KB) and
small one (~39 KB) to a temporary directory, as the spool would hold them (just written, so in the
page cache), and times hashing each ``N`` times. Prints the median and 95th percentile in ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import Template, large_template, new_uid, small_template
from listener.instance_files import content_digest


def measure(template: Template, directory: Path, count: int) -> tuple[int, float, float]:
    """Size in bytes, median and p95 of ``count`` digests of fresh copies, in milliseconds."""
    timings = []
    size = 0
    for index in range(count):
        path = directory / f"{index}.dcm"
        data = template.fill(new_uid(), new_uid(), new_uid())
        path.write_bytes(data)
        size = len(data)
        started = time.perf_counter()
        content_digest(path)
        timings.append((time.perf_counter() - started) * 1000)
        path.unlink()
    timings.sort()
    return size, statistics.median(timings), timings[int(len(timings) * 0.95) - 1]


def main() -> None:
    """Print the digest cost for the small and the large instance."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="digests per instance kind [500]")
    count = parser.parse_args().count
    with tempfile.TemporaryDirectory() as directory:
        for name, template in (("small", small_template()), ("large", large_template())):
            size, median, p95 = measure(template, Path(directory), count)
            print(f"{name}: {size / 1000:.0f} KB  median {median:.3f} ms  p95 {p95:.3f} ms")


if __name__ == "__main__":
    main()
