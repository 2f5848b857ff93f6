"""Error messages show the whole cause chain: where it failed (file, line) and the reason beneath it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_platform.errors import describe_error
from mlops_platform.ingest import LandingFileError
from mlops_platform.replay import failure_messages

PATH = Path("/landing/flights/flights/flights_2013-01-02.csv")


def _landing_failure() -> LandingFileError:
    try:
        try:
            b"\xff".decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LandingFileError(PATH, "the header is not valid UTF-8", line=1) from exc
    except LandingFileError as error:
        return error
    raise AssertionError("unreachable")


def test_an_exception_is_described_with_every_cause_outermost_first():
    assert describe_error(_landing_failure()) == (
        f"LandingFileError: {PATH}, line 1: the header is not valid UTF-8\n"
        "  caused by: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte")


def test_an_implicit_context_is_shown_and_a_suppressed_one_is_not():
    def fails(suppress: bool) -> Exception:
        try:
            try:
                raise KeyError("carrier")
            except KeyError:
                if suppress:
                    raise ValueError("no carrier") from None
                raise ValueError("no carrier")
        except ValueError as error:
            return error
        raise AssertionError("unreachable")

    assert describe_error(fails(suppress=False)) == "ValueError: no carrier\n  caused by: KeyError: 'carrier'"
    assert describe_error(fails(suppress=True)) == "ValueError: no carrier"


def test_a_failed_step_shows_the_file_the_line_and_the_reason_not_only_the_innermost_message():
    @dg.asset
    def bronze_flights() -> None:
        raise _landing_failure()

    result = dg.materialize([bronze_flights], raise_on_error=False)

    [message] = failure_messages(result)
    assert message.startswith(f"bronze_flights: mlops_platform.ingest.LandingFileError: {PATH}, line 1: "
                              "the header is not valid UTF-8\n  caused by: UnicodeDecodeError: ")
    assert "Error occurred while executing" not in message
