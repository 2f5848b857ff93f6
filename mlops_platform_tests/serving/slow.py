"""A pipeline step that keeps a CPU busy before passing its input on: a scorer that saturates the pool."""

import time

SPIN_SECONDS = 0.05


def spin(frame):
    until = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < until:
        pass
    return frame
