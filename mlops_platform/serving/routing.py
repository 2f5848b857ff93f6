"""Which served model answers a request: a stable hash of its id onto the cumulative traffic percents.

The one owner of the rule: the server routes with it, and the smoke test picks request ids that land on each served
model with it. The same id always lands on the same model, so a client that reuses an id on purpose keeps its side
of an A/B split.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence

SLOTS = 100
Traffic = Sequence[tuple[str, int]]


def slot(request_id: str) -> int:
    return zlib.crc32(request_id.encode()) % SLOTS


def slot_table(traffic: Traffic) -> tuple[str, ...]:
    """The served model of each of the 100 slots, in traffic order; percents must sum to 100."""
    table = tuple(name for name, percent in traffic for _ in range(percent))
    if len(table) != SLOTS:
        raise ValueError(f"traffic {list(traffic)} does not sum to {SLOTS}")
    return table


def route(request_id: str, traffic: Traffic) -> str:
    return slot_table(traffic)[slot(request_id)]


def request_id_for(name: str, traffic: Traffic, prefix: str = "") -> str:
    """A fresh request id (``prefix`` + a UUID) that routes to ``name``, which must have a share of the traffic."""
    table = slot_table(traffic)
    if name not in table:
        raise ValueError(f"'{name}' has no traffic in {list(traffic)}")
    while True:
        candidate = f"{prefix}{uuid.uuid4()}"
        if table[slot(candidate)] == name:
            return candidate
