"""The local Pipes client reads every message of its subprocess, even one the reader first sees half-written.

A loaded machine can show a file's reader the first part of a line the writer is still writing (a large write
becomes visible page by page). The subprocess here writes each message in two parts with a pause between them, so
the reader meets each half line; every materialization and check result must still arrive.
"""

from __future__ import annotations

import sys

import dagster as dg

from mlops_platform.defs.local_pipes import subprocess_pipes_client

CHECKS = ("keys_unique", "rows_reconcile", "quarantine_share", "keys_consistent")

HALF_LINES = f"""
import json, time
from contextlib import contextmanager
from dagster_pipes import (PipesDefaultMessageWriter, PipesMessageWriter, PipesMessageWriterChannel,
                           open_dagster_pipes)


class HalfLines(PipesMessageWriterChannel):
    def __init__(self, path):
        self.path = path

    def write_message(self, message):
        line = json.dumps(message) + "\\n"
        with open(self.path, "a", encoding="utf-8") as messages:
            messages.write(line[:len(line) // 2])
            messages.flush()
            time.sleep(0.05)
            messages.write(line[len(line) // 2:])


class HalfLinesWriter(PipesMessageWriter):
    @contextmanager
    def open(self, params):
        yield HalfLines(params[PipesDefaultMessageWriter.FILE_PATH_KEY])


with open_dagster_pipes(message_writer=HalfLinesWriter()) as pipes:
    pipes.report_asset_materialization(metadata={{"rows": {{"raw_value": 3, "type": "int"}},
                                                 "note": {{"raw_value": "x" * 20000, "type": "text"}}}})
    for check in {CHECKS!r}:
        pipes.report_asset_check(check_name=check, passed=True, metadata={{"note": "y" * 5000}})
"""


@dg.asset(check_specs=[dg.AssetCheckSpec(name, asset="table") for name in CHECKS])
def table(context):
    yield from subprocess_pipes_client().run(command=[sys.executable, "-c", HALF_LINES], context=context
                                             ).get_results()


def test_every_message_arrives_when_the_reader_sees_half_written_lines():
    result = dg.materialize([table], raise_on_error=False)

    assert result.success
    (materialization,) = result.get_asset_materialization_events()
    assert materialization.step_materialization_data.materialization.metadata["rows"].value == 3
    assert {(e.check_name, e.passed) for e in result.get_asset_check_evaluations()} == {
        (check, True) for check in CHECKS}
