"""Endpoint configuration rules, the online store file and request decoding: the parts that need no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from mlops_platform.serving.config import (
    EndpointConfig,
    EndpointConfigError,
    ServedModel,
    publish_online_store,
)
from mlops_platform.serving.online_store import OnlineStore
from mlops_platform.serving.payload import RequestError, parse_records

pytestmark = pytest.mark.timeout(30)


def config(**changes: Any) -> dict[str, Any]:
    base = {
        "name": "flights",
        "served_models": [{"name": "champion", "model_uri": "models:/m@champion", "traffic_percent": 90},
                          {"name": "challenger", "model_uri": "models:/m@challenger", "traffic_percent": 10}],
        "keys": ["flight_id"],
        "online_store_path": "store.arrow",
        "feature_columns": ["distance", "temp", "origin"],
        "request_fields": ["distance"],
        "fallback": {"temp": 50.0, "origin": None},
    }
    return {**base, **changes}


def test_a_valid_configuration_splits_features_by_source() -> None:
    endpoint = EndpointConfig.model_validate(config())
    assert endpoint.request_columns == ["flight_id", "distance"]
    assert endpoint.store_features == ["temp", "origin"]
    assert not endpoint.is_resolved


@pytest.mark.parametrize(("changes", "message"), [
    ({"served_models": [{"name": "a", "model_uri": "models:/m/1", "traffic_percent": 60},
                        {"name": "b", "model_uri": "models:/m/2", "traffic_percent": 30}]},
     "sum to 100, got 90"),
    ({"served_models": [{"name": "a", "model_uri": "models:/m/1", "traffic_percent": 50},
                        {"name": "a", "model_uri": "models:/m/2", "traffic_percent": 50}]}, "unique"),
    ({"request_fields": ["distance", "dep_hour"]}, "['dep_hour'] are not among the feature_columns"),
    ({"fallback": {"temp": 50.0}}, "missing ['origin']"),
    ({"fallback": {"temp": 50.0, "origin": "EWR", "distance": 1.0}}, "not online-store features"),
    ({"field_types": {"temp": "number"}}, "neither keys nor request_fields"),
    ({"name": "has space"}, "pattern"),
])
def test_inconsistent_configurations_are_refused_with_the_reason(changes: dict[str, Any],
                                                                   message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        EndpointConfig.model_validate(config(**changes))


def test_loading_a_broken_file_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "flights.json"
    valid = EndpointConfig.model_validate(config()).model_dump_json()
    path.write_text(valid.replace('"traffic_percent":10', '"traffic_percent":"ten"'))
    with pytest.raises(EndpointConfigError, match=r"flights.json: served_models\.1\.traffic_percent"):
        EndpointConfig.load(path)


def test_served_model_keeps_what_the_deploy_resolved() -> None:
    served = ServedModel(name="champion", model_uri="models:/m@champion", traffic_percent=100,
                         model_name="m", model_version="3", model_path="/serving/models/m/3")
    endpoint = EndpointConfig.model_validate(config(served_models=[served.model_dump()]))
    assert endpoint.is_resolved


def store_table() -> pa.Table:
    return pa.table({"carrier": ["AA", "AA", "B6"], "flight": [1, 2, 1], "temp": [50.5, None, 61.0],
                     "origin": pa.array(["JFK", "LGA", "EWR"]).dictionary_encode()})


@pytest.mark.parametrize("kind", ["arrow-file", "arrow-stream", "parquet"])
def test_online_store_reads_every_published_format(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "store"
    if kind == "arrow-file":
        publish_online_store(path, store_table())
    elif kind == "arrow-stream":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, store_table().schema) as writer:
            writer.write_table(store_table())
    else:
        pq.write_table(store_table(), path)
    store = OnlineStore.load(path, ["carrier", "flight"], ["temp", "origin"])
    assert len(store) == 3
    assert store.get(("AA", 2)) == (None, "LGA")
    assert store.get(("B6", 1)) == (61.0, "EWR")
    assert store.get(("B6", 2)) is None
    assert store.key_types == {"carrier": "string", "flight": "integer"}


def test_online_store_refuses_duplicates_missing_columns_and_odd_types(tmp_path: Path) -> None:
    twice = pa.concat_tables([store_table(), store_table()])
    duplicated = publish_online_store(tmp_path / "dup.arrow", twice)
    with pytest.raises(EndpointConfigError, match="3 duplicate keys"):
        OnlineStore.load(duplicated, ["carrier", "flight"], ["temp"])
    with pytest.raises(EndpointConfigError, match=r"lacks columns \['wind'\]"):
        OnlineStore.load(duplicated, ["carrier", "flight"], ["wind"])
    dated = publish_online_store(tmp_path / "dated.arrow",
                                 store_table().append_column("day", pa.array([0, 1, 2], pa.date32())))
    with pytest.raises(EndpointConfigError, match="'day' has type date32"):
        OnlineStore.load(dated, ["carrier", "flight"], ["day"])
    with pytest.raises(EndpointConfigError, match="does not exist"):
        OnlineStore.load(tmp_path / "nowhere.arrow", ["carrier"], [])


def test_the_three_request_formats_decode_to_the_same_records() -> None:
    records = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    bodies = [
        b'{"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}',
        b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}',
        b'{"inputs": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], "params": {}}',
        b'{"inputs": {"a": [1, 2], "b": ["x", "y"]}}',
    ]
    for body in bodies:
        assert parse_records(body) == records


@pytest.mark.parametrize(("body", "code", "field"), [
    (b"not json", "MALFORMED_REQUEST", None),
    (b"[1, 2]", "MALFORMED_REQUEST", None),
    (b'{"dataframe_records": [], "inputs": []}', "UNSUPPORTED_FORMAT", "dataframe_records"),
    (b'{"instances": [{"a": 1}]}', "UNSUPPORTED_FORMAT", "instances"),
    (b'{"dataframe_records": {"a": 1}}', "INVALID_TYPE", "dataframe_records"),
    (b'{"dataframe_records": [1]}', "INVALID_TYPE", "dataframe_records[0]"),
    (b'{"dataframe_records": []}', "MISSING_FIELD", "dataframe_records"),
    (b'{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', "INVALID_TYPE", "dataframe_split.data[0]"),
    (b'{"dataframe_split": {"data": [[1]]}}', "INVALID_TYPE", "dataframe_split.columns"),
    (b'{"inputs": {"a": [1, 2], "b": ["x"]}}', "INVALID_TYPE", "inputs"),
    (b'{"inputs": {"a": 1}}', "INVALID_TYPE", "a"),
])
def test_undecodable_requests_name_what_is_wrong(body: bytes, code: str, field: str | None) -> None:
    with pytest.raises(RequestError) as refused:
        parse_records(body)
    assert (refused.value.status, refused.value.code, refused.value.field) == (400, code, field)
