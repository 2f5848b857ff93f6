"""Scoring off the event loop: worker threads sized to the cores, micro-batches, and a bounded queue.

The event loop only parses, routes, logs and answers; scoring runs on ``workers`` threads. A worker that picks up a
request also takes every request queued behind it for the same scorer (up to ``max_batch_rows`` rows) and scores
them in one call, when the scorer's answers per row do not depend on the batch (compiled trees): under load the
fixed cost of a call is shared. More than ``max_pending`` requests waiting is refused at once with
:class:`Overloaded` (the server answers 503 with Retry-After) instead of growing a queue whose tail would time out.

Each worker runs one OpenMP thread (``threadpoolctl`` caps the process at start-up, see ``process.py``): with one
request per worker, more threads only spin against each other and the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from mlops_platform.serving.scoring import Rows, Scorer

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More requests are waiting for a scorer than the pool accepts."""


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class _Job:
    scorer: Scorer
    rows: Rows
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ScoringPool:
    """Worker threads that score queued requests in micro-batches and hand the answers back to the event loop."""

    def __init__(self, workers: int | None = None, *, max_pending: int = 256, max_batch_rows: int = 256) -> None:
        self.workers = workers or default_workers()
        self.max_pending = max_pending
        self.max_batch_rows = max_batch_rows
        self._queue: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.pending = 0
        self.refused = 0
        self.batches = 0
        self.scored_requests = 0

    def start(self) -> ScoringPool:
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, name=f"scorer-{i}", daemon=True)
                             for i in range(self.workers)]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the workers."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    async def score(self, scorer: Scorer, rows: Rows) -> list[Any]:
        """The answers of ``scorer`` for ``rows``, computed on a worker; :class:`Overloaded` when the queue is full."""
        if self.pending >= self.max_pending:
            self.refused += 1
            raise Overloaded(f"{self.pending} requests are waiting to be scored (at most {self.max_pending})")
        loop = asyncio.get_running_loop()
        job = _Job(scorer, rows, loop, loop.create_future())
        self.pending += 1
        try:
            with self._ready:
                self._queue.append(job)
                self._ready.notify()
            return await job.future
        finally:
            self.pending -= 1

    def stats(self) -> dict[str, Any]:
        return {"workers": self.workers, "pending": self.pending, "max_pending": self.max_pending,
                "refused": self.refused, "batches": self.batches, "scored_requests": self.scored_requests}

    def _take(self) -> list[_Job] | None:
        """The next job and, when its scorer allows it, the jobs for the same scorer queued behind it."""
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            first = self._queue.popleft()
            batch = [first]
            if first.scorer.batchable:
                rows = len(first.rows)
                kept: list[_Job] = []
                while self._queue and rows < self.max_batch_rows:
                    job = self._queue.popleft()
                    if job.scorer is first.scorer and rows + len(job.rows) <= self.max_batch_rows:
                        batch.append(job)
                        rows += len(job.rows)
                    else:
                        kept.append(job)
                self._queue.extendleft(reversed(kept))
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self.batches += 1
            if len(batch) == 1:
                self._run(batch[0])
                continue
            try:
                rows = [row for job in batch for row in job.rows]
                answers = batch[0].scorer(rows)
            except Exception:  # noqa: BLE001 - one request's rows may be at fault: score each alone
                for job in batch:
                    self._run(job)
                continue
            start = 0
            for job in batch:
                end = start + len(job.rows)
                job.loop.call_soon_threadsafe(_settle, job.future, answers[start:end], None)
                start = end
            self.scored_requests += len(batch)

    def _run(self, job: _Job) -> None:
        try:
            answers, error = job.scorer(job.rows), None
        except Exception as caught:  # noqa: BLE001 - handed to the request, which answers with it
            answers, error = None, caught
        self.scored_requests += 1
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, answers, error)
        except RuntimeError:
            logger.warning("scoring pool: the event loop closed before an answer could be handed back")
