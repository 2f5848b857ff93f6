"""The rows a model sees, shared by training, the gate and monitoring: a training set's labelled rows with the types
the pipeline expects, a classification label as 0/1, the held-out test rows, and where those rows came from.

Only pandas and Arrow here: the definitions import this module, and must not pay for scikit-learn or MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_platform import names
from mlops_platform.ml.scoring import feature_frame
from mlops_platform.names import SPLIT
from mlops_platform.settings import ModelConfig


@dataclass(frozen=True)
class TrainingLineage:
    """Which data a model was trained from: the training-set table at a Delta version, and that table's inputs."""

    table: str
    path: str
    version: int
    input_versions: Mapping[str, int] = field(default_factory=dict)
    dagster_run_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"training_set": {"table": self.table, "path": self.path, "version": self.version},
                "input_versions": dict(self.input_versions), "dagster_run_id": self.dagster_run_id}

    def tags(self) -> dict[str, str]:
        tags = {names.TRAINING_SET_TABLE_TAG: self.table, names.TRAINING_SET_VERSION_TAG: str(self.version)}
        tags |= {f"input_version.{name}": str(version) for name, version in self.input_versions.items()}
        if self.dagster_run_id:
            tags["dagster_run_id"] = self.dagster_run_id
        return tags


def model_frame(data: pa.Table | pd.DataFrame, config: ModelConfig, features: Sequence[str],
                order_by: Sequence[str] = ()) -> pd.DataFrame:
    """The labelled rows of a training set with the types the pipeline and its signature expect.

    Rows without a label are dropped (a cancelled flight has no arrival). Rows are sorted by ``order_by``, because
    the order Delta returns files in is not part of a table version and a booster's result depends on row order.
    Categorical features become Python strings with NaN for missing, every other feature float64, the label 0/1
    for classification: a table whose integer column gains a null keeps the same model signature.
    """
    frame = data.to_pandas() if isinstance(data, pa.Table) else data.copy()
    missing = [column for column in [*features, config.label, SPLIT] if column not in frame.columns]
    if missing:
        raise KeyError(f"the training set has no column(s) {missing}; it has {list(frame.columns)}")
    unknown_categorical = sorted(set(config.categorical) - set(features))
    if unknown_categorical:
        raise ValueError(f"model '{config.registered_name}': categorical columns {unknown_categorical} are not "
                         f"features of the training set (features: {list(features)})")
    frame = frame[frame[config.label].notna()]
    if order_by:
        frame = frame.sort_values(list(order_by), kind="stable")
    frame = frame.reset_index(drop=True)
    frame[list(features)] = feature_frame(frame, config, features)
    label = frame[config.label]
    frame[config.label] = binary_labels(label, config) if config.task == "classification" else label.astype("float64")
    return frame


def binary_labels(label: pd.Series, config: ModelConfig) -> pd.Series:
    """A classification label as 0/1: 1 where it is the configured ``positive_class`` (a boolean or 0/1 label needs
    none). Rows without a label must be dropped first."""
    values = set(label.unique().tolist())
    where = f"model '{config.registered_name}': label '{config.label}'"
    if config.positive_class is None:
        if not values <= {0, 1}:
            raise ValueError(f"{where} holds {sorted(map(str, values))[:10]}: name the value to predict as "
                             "positive_class in the model's configuration (only a boolean or 0/1 label needs none)")
        return label.astype(int)
    if len(values) > 2:
        raise ValueError(f"{where} holds {len(values)} values ({sorted(map(str, values))[:10]}), a binary "
                         "classifier needs two")
    if values and config.positive_class not in values:
        raise ValueError(f"{where}: positive_class {config.positive_class!r} is not among its values "
                         f"{sorted(map(str, values))}")
    return (label == config.positive_class).astype(int)




# The split neither tuning nor the refit sees: "test".
HELD_OUT = names.SPLITS[-1]


def held_out(frame: pd.DataFrame) -> pd.DataFrame:
    """The test split of a ``model_frame``: the rows every candidate and the champion are compared on."""
    return frame[frame[SPLIT] == HELD_OUT].reset_index(drop=True)


def held_out_frame(data: pa.Table, config: ModelConfig, features: Sequence[str],
                   order_by: Sequence[str] = ()) -> pd.DataFrame:
    """``held_out(model_frame(data, ...))``, typing the test rows only (6 % of a 120-day window).

    The same frame: the rows are dropped, sorted and typed row by row, so doing it to the test rows alone gives the
    same rows in the same order with the same values (``mlops_platform_tests/training/test_model_data.py``).
    """
    return held_out(model_frame(data.filter(pc.equal(data[SPLIT], HELD_OUT)), config, features, order_by))
