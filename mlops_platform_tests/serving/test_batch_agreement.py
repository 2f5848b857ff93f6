"""The same rows scored by the daily job (``predictions/<model>``) and by the endpoint give the same numbers.

Real landed days go through the daily job (bronze to predictions) with a champion in the registry; the endpoint then
receives each predicted row's request fields and finds the features the batch used in its online store. Every
probability must be the batch's exactly, and every label the batch's decision.
"""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from mlops_platform import names
from mlops_platform.defs import build_definitions
from mlops_platform.defs.stages import predictions_key
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.ml.scoring import PREDICTED_LABEL, PREDICTION
from mlops_platform.resources.serving import EndpointDeployment, ResolvedModel
from mlops_platform.resources.warehouse import DayRange
from mlops_platform.serving.config import publish_online_store
from mlops_platform.settings import Settings
from mlops_platform_tests.conftest import LANDED_DAYS, run_day
from mlops_platform_tests.serving.support import (
    REQUEST_FIELDS,
    ROW_KEY,
    fit_pipeline,
    register,
    store_and_requests,
)

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("serving-batch")]

MODEL = "delay"


def test_the_endpoint_answers_the_numbers_of_the_days_batch_predictions(landed_settings: Settings, frames,
                                                                         features) -> None:
    usecase = landed_settings.usecases["flights"]
    config = usecase.models[MODEL]
    definitions = build_definitions(landed_settings)
    tracking = definitions.resources["mlflow"]
    tracking.configure()
    train = frames["classification"][frames["classification"]["split"] == "train"].head(4_000)
    version = register(fit_pipeline("hist_gradient_boosting", config, train, features), config, features,
                       tracking.experiment_id("/agreement"))
    tracking.client().set_registered_model_alias(config.registered_name, CHAMPION, version)
    instance = dg.DagsterInstance.ephemeral()
    for day in LANDED_DAYS[:2]:
        # Monitoring needs a champion with training lineage, which this one lacks; the predictions are what counts.
        result = run_day(definitions, day, instance)
        assert predictions_key(usecase, MODEL) in {e.asset_key for e in result.get_asset_materialization_events()}

    warehouse = definitions.resources["warehouse"]
    gold = usecase.gold[usecase.training_set.source]
    day = LANDED_DAYS[1]
    batch = warehouse.read(*names.predictions_table(usecase.name, MODEL), days=DayRange(gold.partition_column, day, day)).to_pandas()
    assert len(batch) > 500 and set(batch["model_version"]) == {version}
    assert batch[features].isna().any(axis=None), "the day's rows hold missing values"

    serving = definitions.resources["serving"]
    store, records = store_and_requests(batch, features)
    publish_online_store(serving.store_path("agreement"), store)
    outcome = serving.deploy(EndpointDeployment(
        name="agreement", models=(ResolvedModel(CHAMPION, config.registered_name, version, 100),), keys=(ROW_KEY,),
        request_fields=tuple(REQUEST_FIELDS), feature_columns=tuple(features),
        fallback={f: None for f in features if f not in REQUEST_FIELDS},
        online_store_path=str(serving.store_path("agreement")), usecase=usecase.name,
    ), tracking_uri=tracking.tracking_uri)
    answered = httpx.post(outcome.url, json={"dataframe_records": records}, timeout=60)
    singles = [httpx.post(outcome.url, json={"dataframe_records": [r]}, timeout=60).json()["predictions"][0]
               for r in records[:50]]

    assert answered.status_code == 200, answered.text
    predictions = answered.json()["predictions"]
    assert [p["probability"] for p in predictions] == batch[PREDICTION].tolist()
    assert [p["label"] == 1 for p in predictions] == batch[PREDICTED_LABEL].tolist()
    assert singles == predictions[:50]
