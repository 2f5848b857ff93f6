"""Waiting for a state that sends no notice: another process's files and health, a remote API's status.

Where an event exists (a thread's ``Event``, a child's exit, a Pipes session's close) the code waits on it; what is
left can only be asked again until it answers or time is up, and tenacity does the asking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def poll_until(condition: Callable[[], T], timeout: float, interval: float) -> T:
    """``condition()``'s first truthy value, asked every ``interval`` seconds; its last (falsy) one once ``timeout``
    seconds have passed. An exception from ``condition`` ends the wait at once."""
    return Retrying(retry=retry_if_result(lambda value: not value), wait=wait_fixed(interval),
                    stop=stop_after_delay(timeout), retry_error_callback=lambda state: state.outcome.result()
                    )(condition)
