"""Request bodies in the three Databricks Model Serving formats, and the errors a client gets back.

``dataframe_records`` (a list of objects), ``dataframe_split`` (columns plus rows) and ``inputs`` (a list of
objects, or an object of equal-length columns) all become one list of records; a body may also carry
``client_request_id`` (a string, as Databricks takes it) and ``params``. Every refusal is a :class:`RequestError`
that names the field at fault, so a client can fix its request without reading server logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

FORMATS = ("dataframe_records", "dataframe_split", "inputs")
CLIENT_REQUEST_ID = "client_request_id"
MAX_CLIENT_REQUEST_ID = 128
# Keys a Databricks client may send beside the data; ``params`` carries nothing this server uses.
EXTRA_KEYS = ("params", CLIENT_REQUEST_ID)


class RequestError(Exception):
    """A request the server refuses: the HTTP status, a stable error code and a message naming the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a client would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_string(value: Any) -> bool:
    return type(value) is str


def _is_integer(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def _is_boolean(value: Any) -> bool:
    return type(value) is bool


def _is_scalar(value: Any) -> bool:
    return type(value) in (str, int, bool) or (type(value) is float and math.isfinite(value))


TYPE_CHECKS = {
    "string": (_is_string, "a string"),
    "integer": (_is_integer, "an integer"),
    "number": (_is_number, "a finite number"),
    "boolean": (_is_boolean, "a boolean"),
    None: (_is_scalar, "a string, number or boolean"),
}


def field_check(kind: str | None, nullable: bool) -> tuple[Callable[[Any], bool], str]:
    """The check a record's value of a field must pass, and how a refusal names what was expected."""
    check, expected = TYPE_CHECKS[kind]
    if not nullable:
        return check, expected
    return (lambda value: value is None or check(value)), f"{expected} or null"


def is_json_content_type(value: bytes | None) -> bool:
    """Whether a Content-Type header says JSON (``application/json``, parameters such as charset allowed)."""
    return value is not None and value.split(b";", 1)[0].strip().lower() == b"application/json"


def parse_records(body: bytes) -> list[dict[str, Any]]:
    """Decode a request body into records, or raise :class:`RequestError` saying what is wrong with it."""
    return parse_request(body)[0]


def parse_request(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """A request body's records and its ``client_request_id`` (None when absent), or a :class:`RequestError`."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, "MALFORMED_REQUEST", f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "MALFORMED_REQUEST",
                           f"request body must be a JSON object with one of {list(FORMATS)}, "
                           f"got a JSON {json_type(payload)}")
    given = [key for key in FORMATS if key in payload]
    unknown = [key for key in payload if key not in FORMATS and key not in EXTRA_KEYS]
    if len(given) != 1 or unknown:
        detail = f"unknown keys {unknown}" if unknown else f"found {given or 'none of them'}"
        raise RequestError(400, "UNSUPPORTED_FORMAT",
                           f"request body must hold exactly one of {list(FORMATS)}; {detail}",
                           field=(unknown or given or [None])[0])
    kind = given[0]
    data = payload[kind]
    if kind == "dataframe_records":
        records = _records(data, kind)
    elif kind == "dataframe_split":
        records = _split(data)
    elif isinstance(data, dict):
        records = _columns(data)
    else:
        records = _records(data, kind)
    if not records:
        raise RequestError(400, "MISSING_FIELD", f"'{kind}' holds no records", field=kind)
    client_id = payload.get(CLIENT_REQUEST_ID)
    if client_id is not None and (not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_REQUEST_ID):
        raise RequestError(400, "INVALID_TYPE", f"'{CLIENT_REQUEST_ID}' must be a string of 1 to "
                           f"{MAX_CLIENT_REQUEST_ID} characters", field=CLIENT_REQUEST_ID)
    return records, client_id


def _records(data: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise RequestError(400, "INVALID_TYPE",
                           f"'{kind}' must be a list of objects, got a JSON {json_type(data)}", field=kind)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise RequestError(400, "INVALID_TYPE",
                               f"'{kind}[{index}]' must be an object, got a JSON {json_type(record)}",
                               field=f"{kind}[{index}]")
    return data


def _split(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        raise RequestError(400, "INVALID_TYPE",
                           "'dataframe_split' must be an object with 'columns' and 'data', "
                           f"got a JSON {json_type(data)}",
                           field="dataframe_split")
    columns, rows = data.get("columns"), data.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(400, "INVALID_TYPE", "'dataframe_split.columns' must be a list of column names",
                           field="dataframe_split.columns")
    if not isinstance(rows, list):
        raise RequestError(400, "INVALID_TYPE", "'dataframe_split.data' must be a list of rows",
                           field="dataframe_split.data")
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RequestError(400, "INVALID_TYPE",
                               f"'dataframe_split.data[{index}]' must be a list of {len(columns)} values, "
                               "one per column",
                               field=f"dataframe_split.data[{index}]")
        records.append(dict(zip(columns, row, strict=True)))
    return records


def _columns(data: dict[str, Any]) -> list[dict[str, Any]]:
    lengths = set()
    for name, values in data.items():
        if not isinstance(values, list):
            raise RequestError(400, "INVALID_TYPE",
                               f"'inputs.{name}' must be a list of values (inputs as columns), "
                               f"got a JSON {json_type(values)}", field=name)
        lengths.add(len(values))
    if len(lengths) > 1:
        raise RequestError(400, "INVALID_TYPE",
                           f"the columns of 'inputs' have different lengths {sorted(lengths)}",
                           field="inputs")
    names = list(data)
    return [dict(zip(names, values, strict=True)) for values in zip(*data.values(), strict=True)]
