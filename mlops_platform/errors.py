"""Errors as a person reads them: every message of the cause chain, outermost first.

A failure deep in a library says what went wrong (``invalid utf-8 sequence``); the error that wraps it says where
(the file, the line). Both are needed, so messages for the command line and for failed runs show the whole chain.
"""

from __future__ import annotations

from typing import Any

# Dagster wraps an exception raised in a step in this error; its message only repeats the step's name.
_STEP_WRAPPER = "DagsterExecutionStepExecutionError"
CAUSED_BY = "\n  caused by: "


def _chain(error: Any) -> list[Any]:
    """``error`` and its causes: a Python exception (``__cause__``, else an unsuppressed ``__context__``) or
    Dagster's serialized error info (``cause``, else ``context``)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        if isinstance(error, BaseException):
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        else:
            error = error.cause or error.context
    return chain


def _message(error: Any) -> str:
    if isinstance(error, BaseException):
        text = str(error).strip()
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return error.message.strip()


def describe_error(error: Any) -> str:
    """Every message of ``error``'s chain, outermost first, one per line, skipping Dagster's step wrapper."""
    chain = [item for item in _chain(error)
             if getattr(item, "cls_name", type(item).__name__) != _STEP_WRAPPER] or _chain(error)
    return CAUSED_BY.join(_message(item) for item in chain)
