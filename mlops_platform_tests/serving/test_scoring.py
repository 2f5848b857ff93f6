"""Scorers against the registered model's own pyfunc, on the pipelines the platform trains and real held-out rows.

The compiled scorers must give bit-identical answers (not merely close ones): the endpoint promises the numbers of
batch scoring, which runs the pyfunc.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlops_platform.ml import packaging
from mlops_platform.ml.training import input_signature
from mlops_platform.serving import scoring
from mlops_platform.serving.scoring import Unsupported, compile_pipeline, load_scorer, verify
from mlops_platform.settings import ModelConfig
from mlops_platform_tests.serving.support import (
    ESTIMATORS,
    TRUSTED_TYPES,
    assert_same_answers,
    fit_pipeline,
    json_value,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("serving-models")]

TASKS = ("classification", "regression")
EXPECTED_PATH = {"hist_gradient_boosting": "compiled", "random_forest": "compiled", "linear": "pyfunc"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, frames: dict[str, pd.DataFrame], features: list[str],
               configs: dict[str, ModelConfig]) -> dict[tuple[str, str], Path]:
    """Every estimator kind for both tasks, fitted on the train split and saved as training logs a model."""
    root = tmp_path_factory.mktemp("models")
    saved = {}
    for task in TASKS:
        train = frames[task][frames[task]["split"] == "train"].head(5_000)
        for kind in ESTIMATORS:
            folder = root / f"{kind}-{task}"
            packaging.save_model(folder, pipeline=fit_pipeline(kind, configs[task], train, features), task=task,
                                 signature=input_signature(configs[task], features),
                                 skops_trusted_types=TRUSTED_TYPES)
            saved[(kind, task)] = folder
    return saved


def rows_of(frame: pd.DataFrame, features: list[str]) -> list[tuple]:
    """Feature rows as the server assembles them from JSON: None where a value is missing."""
    return [tuple(json_value(v) for v in row) for row in frame[features].astype(object).itertuples(index=False)]


def pyfunc_answers(folder: Path, frame: pd.DataFrame, features: list[str]) -> list:
    """What ``mlflow.pyfunc`` answers, as JSON would carry it."""
    answer = mlflow.pyfunc.load_model(str(folder)).predict(frame[features])
    if isinstance(answer, pd.DataFrame):
        return answer.to_dict(orient="records")
    return np.asarray(answer).tolist()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", ESTIMATORS)
def test_each_scorer_gives_the_pyfunc_answers_exactly(model_dirs, scored_rows: pd.DataFrame, features: list[str],
                                                      kind: str, task: str) -> None:
    folder = model_dirs[(kind, task)]
    scorer = load_scorer(folder, features)
    expected = pyfunc_answers(folder, scored_rows, features)
    rows = rows_of(scored_rows, features)

    assert scorer.path == EXPECTED_PATH[kind], scorer.detail
    assert_same_answers(scorer(rows), expected, kind)
    assert_same_answers([scorer([row])[0] for row in rows[:40]], expected[:40], kind)
    if task == "classification":
        assert set(expected[0]) == {"probability", "label"}
        assert all(a["label"] == int(a["probability"] >= 0.5) for a in expected)
    else:
        assert all(isinstance(a, float) for a in expected)


def test_unseen_categories_and_missing_values_score_as_the_pyfunc_does(model_dirs, scored_rows: pd.DataFrame,
                                                                       features: list[str]) -> None:
    folder = model_dirs[("hist_gradient_boosting", "classification")]
    odd = scored_rows.head(6).copy()
    odd["carrier"] = ["ZZ", None, "UA", "ZZ", "AA", None]
    odd["plane_type"] = None
    for column in ("temp", "wind_gust", "plane_year"):
        odd[column] = np.nan
    scorer = load_scorer(folder, features)

    assert scorer.path == "compiled"
    assert scorer(rows_of(odd, features)) == pyfunc_answers(folder, odd, features)


def test_the_threshold_logged_with_the_model_decides_the_label(tmp_path: Path, frames, features, configs,
                                                               scored_rows: pd.DataFrame) -> None:
    config = configs["classification"].model_copy(update={"decision_threshold": 0.2})
    train = frames["classification"][frames["classification"]["split"] == "train"].head(3_000)
    folder = tmp_path / "model"
    packaging.save_model(folder, pipeline=fit_pipeline("hist_gradient_boosting", config, train, features),
                         task="classification", signature=input_signature(config, features),
                         decision_threshold=config.decision_threshold, skops_trusted_types=TRUSTED_TYPES)
    answers = load_scorer(folder, features)(rows_of(scored_rows, features))

    assert answers == pyfunc_answers(folder, scored_rows, features)
    assert all(a["label"] == int(a["probability"] >= 0.2) for a in answers)
    assert any(0.2 <= a["probability"] < 0.5 for a in answers), "some labels must differ from a 0.5 threshold"


def test_the_endpoint_column_order_may_differ_from_the_model(model_dirs, scored_rows, features) -> None:
    folder = model_dirs[("random_forest", "classification")]
    shuffled = list(reversed(features))
    scorer = load_scorer(folder, shuffled)

    assert scorer.path == "compiled"
    assert scorer(rows_of(scored_rows, shuffled)) == pyfunc_answers(folder, scored_rows, features)


def test_verification_refuses_a_compiled_scorer_off_by_one_ulp(model_dirs, scored_rows, features) -> None:
    folder = model_dirs[("hist_gradient_boosting", "classification")]
    served = packaging.load_served(folder)
    compiled = compile_pipeline(served, features)
    reference = scoring.reference_values(served, features)
    probes = rows_of(scored_rows.head(20), features)
    verify(compiled, reference, probes)

    def nudged(rows):
        return np.nextafter(compiled(rows), 1.0)

    with pytest.raises(Unsupported, match="differ"):
        verify(nudged, reference, probes)


def test_compilation_can_be_turned_off(model_dirs, scored_rows, features) -> None:
    folder = model_dirs[("hist_gradient_boosting", "regression")]
    scorer = load_scorer(folder, features, compile_models=False)

    assert (scorer.path, scorer.batchable) == ("pyfunc", False)
    assert scorer(rows_of(scored_rows.head(5), features)) == pyfunc_answers(folder, scored_rows.head(5), features)
