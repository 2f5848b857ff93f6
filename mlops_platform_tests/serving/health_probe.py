"""Time ``GET /health`` (or another path) from a process of its own until a stop file appears; print the seconds.

Run beside a load generator, so the probe's own latency does not include the generator's threads waiting for the
test process's GIL.
"""

import json
import sys
import time
from pathlib import Path

import httpx


def main(url: str, stop: str) -> None:
    timings = []
    started_file = Path(f"{stop}.started")
    with httpx.Client(timeout=30) as client:
        while not Path(stop).exists():
            started_file.touch()
            started = time.perf_counter()
            status = client.get(url).status_code
            timings.append((time.perf_counter() - started, status))
            time.sleep(0.01)
    print(json.dumps(timings))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
