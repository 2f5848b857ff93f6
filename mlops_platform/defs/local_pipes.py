"""The remote entry point as a subprocess of the orchestrator: how a laptop (and the tests) run a remote step.

The subprocess appends one JSON line per Pipes message to a file that the orchestrator reads while it runs.
Dagster's own ``PipesTempFileMessageReader`` parses whatever ``readline`` returns, but the kernel makes a large
write visible page by page, so a reader can meet the first part of a message the writer has not finished writing:
its thread then dies on the JSON error and every later message is lost (under load, a silver step's check results
went missing). The reader here keeps a line until its newline has arrived.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter, PipesParams

# How long the reader waits for more of the file before looking again; the session's close wakes it at once.
READ_INTERVAL_SECONDS = 0.01


class PipesCompleteLinesMessageReader(dg.PipesMessageReader):
    """Reads the messages of a local process from a temporary file, each once its line is complete."""

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[PipesParams]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "messages"
            path.touch()
            closed = threading.Event()
            reader = threading.Thread(target=self._read, args=(path, handler, closed), daemon=True)
            reader.start()
            try:
                yield {PipesDefaultMessageWriter.FILE_PATH_KEY: str(path)}
            finally:
                closed.set()
                reader.join()

    @staticmethod
    def _read(path: Path, handler: dg.PipesMessageHandler, closed: threading.Event) -> None:
        try:
            with path.open(encoding="utf-8") as messages:
                line = ""
                while True:
                    # Seen before reading: the session closes after the process exited, so once it is closed,
                    # reading to the end of the file gets every message that was written.
                    last_look = closed.is_set()
                    line += messages.readline()
                    if line.endswith("\n"):
                        handler.handle_message(json.loads(line))
                        line = ""
                    elif last_look:
                        if line:
                            raise ValueError(f"the process exited in the middle of a message: {line[:200]!r}")
                        return
                    else:
                        closed.wait(READ_INTERVAL_SECONDS)
        except Exception:
            handler.report_pipes_framework_exception(f"{PipesCompleteLinesMessageReader.__name__} reader thread",
                                                     sys.exc_info())
            raise

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file."


def subprocess_pipes_client() -> dg.PipesSubprocessClient:
    """A Pipes client that runs a command (the remote entry point) as a subprocess reporting through a local file."""
    return dg.PipesSubprocessClient(message_reader=PipesCompleteLinesMessageReader())
