"""Landing files -> bronze records: every record kept as raw strings, with where and when it came from.

Bronze never judges values (silver does), and it loses no record. A record it cannot split into the declared fields
is kept as well: its declared columns are null, ``_raw_line`` holds its text as landed (bytes that are not UTF-8
written ``\\xNN``), ``_parse_rule`` names the fault (one of ``PARSE_RULES``) and ``_parse_error`` explains it; silver
quarantines it under that rule. Every record carries its file, its record number, the line it starts on and when
its file landed.

Only a file that cannot be read at all fails, with its path and line: one that cannot be opened, a header that
lacks a declared column or repeats one, or a quote that opens on one line and does not close on it, which changes
how every line after it reads. Columns the configuration does not know are left out of bronze and reported, unless
the source allows schema evolution. The landing file itself is never modified.

Clean CSV files (no quotes, UTF-8, every line the header's field count, the last line ended) are parsed by Polars;
any other file goes through Python's ``csv`` record by record. Both give the same rows for a clean file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from mlops_platform.settings import SourceConfig
from mlops_platform.transforms.conform import (
    BATCH_ID,
    INGESTED_AT,
    LANDED_AT,
    LANDING_DATE,
    PARSE_ERROR,
    PARSE_RULE,
    RAW_LINE,
    SOURCE_FILE,
    SOURCE_LINE,
    SOURCE_ROW,
)

# The rules a malformed record is quarantined under.
UNTERMINATED = "parse_unterminated_line"
CSV_QUOTING = "parse_csv_quoting"
FIELD_COUNT = "parse_field_count"
ENCODING = "parse_encoding"
JSON_LINE = "parse_json"
PARSE_RULES = (UNTERMINATED, CSV_QUOTING, FIELD_COUNT, ENCODING, JSON_LINE)

_BOM = "\ufeff"
_CUT_SHORT = "the last line ends without a line break: the file may have been cut short"
# ``surrogateescape`` decodes each byte that is not UTF-8 to one of these code points, and encodes it back.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# A JSON string may spell an unpaired surrogate (``"\ud800"``), which no UTF-8 column can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")
_RECORD_COLUMNS = {SOURCE_ROW: pl.Int64, SOURCE_LINE: pl.Int64, RAW_LINE: pl.String, PARSE_RULE: pl.String,
                   PARSE_ERROR: pl.String}


class LandingFileError(ValueError):
    """A landing file bronze cannot ingest; the message names the file, the line when there is one, and why."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass
class BronzeBatch:
    """The rows read from a set of landing files, plus what a person should know about those files."""

    table: pa.Table
    files: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    unexpected_columns: dict[str, list[str]] = field(default_factory=dict)
    malformed_rows: dict[str, int] = field(default_factory=dict)


class _Records:
    """Records of one file as rows: values by header position, then number, line and parse verdict."""

    def __init__(self, header: Sequence[str]) -> None:
        self.header = list(header)
        self.rows: list[tuple[str | int | None, ...]] = []
        self._nulls = (None,) * len(self.header)

    def add(self, line: int, fields: Sequence[str | None]) -> None:
        self.rows.append((*fields, len(self.rows) + 1, line, None, None, None))

    def add_malformed(self, line: int, raw: str, rule: str, error: str) -> None:
        self.rows.append((*self._nulls, len(self.rows) + 1, line, _printable(raw.rstrip("\r\n")), rule, error))

    def frame(self) -> pl.DataFrame:
        schema = [(name, pl.String) for name in self.header] + list(_RECORD_COLUMNS.items())
        return pl.DataFrame(self.rows, schema=schema, orient="row")


def _printable(text: str) -> str:
    """``text`` with each undecodable byte written ``\\xNN``, so it fits a UTF-8 column and shows what landed."""
    if not _UNDECODABLE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _decode(data: bytes) -> str:
    """The file's text without a byte-order mark; each byte that is not UTF-8 kept as an escape (``_UNDECODABLE``)."""
    return data.decode("utf-8", "surrogateescape").removeprefix(_BOM)


def _check_header(path: Path, header: Sequence[str]) -> None:
    if _UNDECODABLE.search("".join(header)):
        raise LandingFileError(path, f"the header is not valid UTF-8: {_printable(','.join(header))}", line=1)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise LandingFileError(path, f"the header repeats columns {repeated}", line=1)


# --- CSV -------------------------------------------------------------------------------------------------------------

def _clean_csv(path: Path, data: bytes) -> pl.DataFrame | None:
    """Polars' parse of a file where every line is one record of the header's field count; None for other files.

    Polars pads a short line with nulls and refuses a long one or bytes that are not UTF-8; with no quotes, blank
    lines or lone carriage returns, a file holding exactly the header's field count per line is then a clean file.
    """
    body = data.removeprefix(_BOM.encode())
    carriage_returns = b"\r" in body
    if (not body.endswith(b"\n") or b'"' in body or b"\n\n" in body
            or carriage_returns and (body.count(b"\r") != body.count(b"\r\n") or b"\n\r\n" in body)):
        return None
    try:
        header = body[:body.index(b"\n")].decode("utf-8").removesuffix("\r").split(",")
    except UnicodeDecodeError:
        return None
    _check_header(path, header)
    lines = body.count(b"\n")
    if "" in header or body.count(b",") != lines * (len(header) - 1):
        return None
    try:
        frame = pl.read_csv(body, infer_schema=False, quote_char=None, has_header=True)
    except pl.exceptions.PolarsError:
        return None
    if frame.columns != header or frame.height != lines - 1:
        return None
    return frame.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(SOURCE_ROW),
        pl.int_range(2, pl.len() + 2, dtype=pl.Int64).alias(SOURCE_LINE),
        *(pl.lit(None, dtype=kind).alias(name) for name, kind in _RECORD_COLUMNS.items() if kind == pl.String),
    )


@dataclass(frozen=True)
class _CsvRecord:
    first_line: int
    last_line: int
    raw: str
    fields: list[str] | None
    problem: str | None


def _csv_records(text: str) -> Iterator[_CsvRecord]:
    """Each record with the lines it spans and its text, or the ``csv`` module's complaint about it."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)
    while True:
        first = reader.line_num + 1
        try:
            fields, problem = next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            fields, problem = None, str(exc)
        if fields == []:
            continue  # a blank line holds no record
        yield _CsvRecord(first, reader.line_num, "".join(lines[first - 1:reader.line_num]), fields, problem)


def _tolerant_csv(path: Path, text: str) -> pl.DataFrame:
    """Record by record: a record that cannot be split into the header's fields is kept as malformed."""
    records = _csv_records(text)
    head = next(records, None)
    if head is None:
        return pl.DataFrame()
    if head.problem is not None or head.first_line != head.last_line:
        raise LandingFileError(path, f"cannot read the header: {head.problem or 'it spans several lines'}",
                               line=head.first_line)
    _check_header(path, head.fields)
    parsed = _Records(list(head.fields))
    width = len(head.fields)
    for record in records:
        count = len(record.fields) if record.fields is not None else None
        if record.last_line > record.first_line and (record.problem is not None or count != width):
            raise LandingFileError(path, _runaway_quote(record, width), line=record.first_line)
        if not record.raw.endswith(("\n", "\r")):
            parsed.add_malformed(record.first_line, record.raw, UNTERMINATED, _CUT_SHORT)
        elif record.problem is not None:
            parsed.add_malformed(record.first_line, record.raw, CSV_QUOTING, f"not valid CSV: {record.problem}")
        elif _UNDECODABLE.search(record.raw):
            parsed.add_malformed(record.first_line, record.raw, ENCODING, _encoding_error(parsed.header, record))
        elif count != width:
            parsed.add_malformed(record.first_line, record.raw, FIELD_COUNT, f"expected {width} fields, found {count}")
        else:
            parsed.add(record.first_line, [value or None for value in record.fields])
    return parsed.frame()


def _runaway_quote(record: _CsvRecord, width: int) -> str:
    span = f"lines {record.first_line}-{record.last_line}"
    if record.fields is None:
        return f"a quote opened on this line does not close on it: {span} cannot be read as records ({record.problem})"
    return (f"a quote opened on this line closes on line {record.last_line}, so {span} read as one record of "
            f"{len(record.fields)} fields instead of {width}")


def _encoding_error(header: Sequence[str], record: _CsvRecord) -> str:
    if record.fields is not None and len(record.fields) == len(header):
        columns = [name for name, value in zip(header, record.fields, strict=True) if _UNDECODABLE.search(value)]
        return f"not valid UTF-8 in {', '.join(columns)}"
    return "not valid UTF-8"


def _read_csv(path: Path, data: bytes) -> pl.DataFrame:
    body = data.removeprefix(_BOM.encode())
    if not body or body.isspace():
        return pl.DataFrame()
    clean = _clean_csv(path, data)
    return clean if clean is not None else _tolerant_csv(path, _decode(data))


# --- JSON lines ------------------------------------------------------------------------------------------------------

# Numbers keep their literal text (``12.50`` stays "12.50"), as a CSV would carry them. One decoder for all lines:
# ``json.loads`` with these arguments would build a new one per line.
_JSON = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _read_jsonl(path: Path, data: bytes) -> pl.DataFrame:
    lines = _decode(data).split("\n")
    ended = lines[-1] == ""
    rows: list[dict[str, str | int | None]] = []
    columns: dict[str, None] = {}
    first_problem: tuple[int, str] | None = None

    def malformed(number: int, line: str, rule: str, error: str) -> None:
        nonlocal first_problem
        first_problem = first_problem or (number, error)
        rows.append({SOURCE_ROW: len(rows) + 1, SOURCE_LINE: number, RAW_LINE: _printable(line.rstrip("\r")),
                     PARSE_RULE: rule, PARSE_ERROR: error})

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if _UNDECODABLE.search(line):
            malformed(number, line, ENCODING, "not valid UTF-8")
            continue
        try:
            value = _JSON.decode(line)
        except json.JSONDecodeError as exc:
            cut = "" if ended or number < len(lines) else f" ({_CUT_SHORT})"
            malformed(number, line, JSON_LINE, f"not valid JSON: {exc.msg} at column {exc.colno}{cut}")
            continue
        if not isinstance(value, dict):
            malformed(number, line, JSON_LINE, f"a line must be a JSON object, found {type(value).__name__}")
            continue
        record = {name: item if item.__class__ is str else _json_text(item) for name, item in value.items()}
        unpaired = [name for name, item in record.items() if item and _SURROGATE.search(item)] if "\\u" in line else []
        if unpaired:
            malformed(number, line, ENCODING, f"unpaired UTF-16 surrogate escape in {', '.join(unpaired)}")
            continue
        columns.update(dict.fromkeys(record))
        record[SOURCE_ROW], record[SOURCE_LINE] = len(rows) + 1, number
        rows.append(record)
    if not columns and first_problem:
        raise LandingFileError(path, f"no line is a JSON object: {first_problem[1]}", line=first_problem[0])
    if not rows:
        return pl.DataFrame()
    return pl.from_dicts(rows, schema={name: pl.String for name in columns} | _RECORD_COLUMNS)


# --- files and batches -----------------------------------------------------------------------------------------------

def _read_raw(path: Path, spec: SourceConfig) -> pl.DataFrame:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LandingFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    return _read_csv(path, data) if spec.format == "csv" else _read_jsonl(path, data)


def landed_at(path: Path) -> dt.datetime:
    """When ``path`` landed: its modification time, to the microsecond, in UTC."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=path.stat().st_mtime_ns // 1000)


def read_landing_file(
    path: Path, spec: SourceConfig, *, landing_date: dt.date | None, batch_id: str, ingested_at: dt.datetime
) -> tuple[pl.DataFrame, list[str]]:
    """One file as bronze rows (all declared columns as strings, plus lineage) and its unexpected columns."""
    raw = _read_raw(path, spec)
    if raw.width == 0:
        raw = pl.DataFrame(schema={name: pl.String for name in spec.columns} | _RECORD_COLUMNS)
    found = [name for name in raw.columns if name not in _RECORD_COLUMNS]
    missing = [name for name in spec.columns if name not in found]
    if missing:
        where = 1 if spec.format == "csv" else None
        raise LandingFileError(path, f"missing declared columns {missing} (found {found})", line=where)
    unexpected = [name for name in found if name not in spec.columns]
    kept = [*spec.columns, *unexpected] if spec.allow_schema_evolution else list(spec.columns)
    lineage = [
        pl.lit(str(path)).alias(SOURCE_FILE),
        pl.col(SOURCE_ROW),
        pl.col(SOURCE_LINE),
        pl.lit(landed_at(path)).cast(pl.Datetime("us", "UTC")).alias(LANDED_AT),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias(INGESTED_AT),
        pl.lit(batch_id).alias(BATCH_ID),
    ]
    if landing_date is not None:
        lineage.insert(0, pl.lit(landing_date).alias(LANDING_DATE))
    rows = raw.select(*(pl.col(name).cast(pl.String) for name in kept), *lineage, RAW_LINE, PARSE_RULE, PARSE_ERROR)
    return rows, unexpected


def read_bronze_batch(
    paths: Sequence[tuple[Path, dt.date | None]], spec: SourceConfig, *, batch_id: str, ingested_at: dt.datetime
) -> BronzeBatch:
    """Read landing files (each with its landing day, or None for snapshots) into one bronze batch."""
    frames, batch = [], BronzeBatch(table=pa.table({}))
    for path, landing_date in paths:
        rows, unexpected = read_landing_file(
            path, spec, landing_date=landing_date, batch_id=batch_id, ingested_at=ingested_at
        )
        batch.files.append(str(path))
        if rows.height == 0:
            batch.empty_files.append(str(path))
        if unexpected:
            batch.unexpected_columns[str(path)] = unexpected
        malformed = rows[PARSE_RULE].count()
        if malformed:
            batch.malformed_rows[str(path)] = malformed
        frames.append(rows)
    batch.table = pl.concat(frames, how="diagonal").to_arrow() if frames else pa.table({})
    return batch
