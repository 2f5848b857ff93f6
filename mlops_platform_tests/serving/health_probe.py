"""Time ``GET /health`` (or another path) from a process of its own until a stop file appears; print the seconds.

Run beside a load generator, so the probe's own latency does not include the generator's threads waiting for the
test process's GIL.
"""

import json
import sys
import time
from pathlib import Path

import httpx

# The first line the probe prints, once its first request is on its way; the timings follow when it stops.
STARTED = "started"


def main(url: str, stop: str) -> None:
    timings = []
    with httpx.Client(timeout=30) as client:
        while not Path(stop).exists():
            if not timings:
                print(STARTED, flush=True)
            started = time.perf_counter()
            status = client.get(url).status_code
            timings.append((time.perf_counter() - started, status))
            time.sleep(0.01)
    print(json.dumps(timings))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
