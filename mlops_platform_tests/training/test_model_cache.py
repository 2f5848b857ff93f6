"""Batch scoring loads each registered version once per process, asks for the alias every time, and keeps few."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from sklearn.linear_model import LogisticRegression

from mlops_platform.ml import packaging, scoring
from mlops_platform.ml.gate import CHAMPION
from mlops_platform.settings import ModelConfig

CONFIG = ModelConfig(description="cache test", registered_name="cache_model", task="classification", label="y",
                     gate={"roc_auc": {"min_value": 0.5}})
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("double", "x", required=False)]),
                           outputs=Schema([TensorSpec(np.dtype("int64"), (-1,))]))


def _register(registry, slope: float) -> str:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(frame, [0, 0, 1, 1] if slope > 0 else [1, 1, 0, 0])
    with mlflow.start_run(experiment_id=registry.experiment_id("/cache")):
        info = packaging.log_model(model, task="classification", signature=SIGNATURE,
                                   registered_model_name=CONFIG.registered_name)
    return str(info.registered_model_version)


@pytest.fixture
def cache(monkeypatch):
    fresh = scoring._ModelCache(2)
    monkeypatch.setattr(scoring, "MODELS", fresh)
    return fresh


def test_a_version_is_loaded_once_and_a_moved_alias_loads_the_new_one(registry, cache):
    client = registry.client()
    first, second = _register(registry, 1.0), _register(registry, -1.0)
    client.set_registered_model_alias(CONFIG.registered_name, CHAMPION, first)

    model, scored = scoring.load_alias(client, CONFIG, CHAMPION)
    again, _ = scoring.load_alias(client, CONFIG, CHAMPION)
    assert scored.version == first and again is model and cache.loads == 1

    client.set_registered_model_alias(CONFIG.registered_name, CHAMPION, second)
    moved, scored = scoring.load_alias(client, CONFIG, CHAMPION)
    assert scored.version == second and moved is not model and cache.loads == 2
    # Each version answers as itself: the cache did not hand the old model out under the new version.
    probe = pd.DataFrame({"x": [3.0]})
    assert model.raw(probe)[0] > 0.5 > moved.raw(probe)[0]


def test_the_least_recently_used_version_leaves_first(registry, cache):
    versions = [_register(registry, 1.0) for _ in range(3)]
    first = scoring.load_version(CONFIG.registered_name, versions[0])
    scoring.load_version(CONFIG.registered_name, versions[1])
    assert scoring.load_version(CONFIG.registered_name, versions[0]) is first
    scoring.load_version(CONFIG.registered_name, versions[2])     # evicts versions[1], used least recently

    assert cache.loads == 3
    assert scoring.load_version(CONFIG.registered_name, versions[0]) is first and cache.loads == 3
    scoring.load_version(CONFIG.registered_name, versions[1])
    assert cache.loads == 4


def test_two_stores_with_the_same_name_and_version_do_not_share_a_model(registry, tmp_path, migrated_store, cache):
    from mlops_platform_tests.training.conftest import copy_store

    version = _register(registry, 1.0)
    here = scoring.load_version(CONFIG.registered_name, version)
    other = copy_store(migrated_store, tmp_path / "other")
    other.configure()
    assert _register(other, -1.0) == version
    there = scoring.load_version(CONFIG.registered_name, version)

    assert there is not here and cache.loads == 2


def test_a_model_folder_loads_without_mlflow_and_answers_as_mlflow_loads_it(registry, tmp_path):
    version = _register(registry, 1.0)
    folder = packaging.local_model(f"models:/{CONFIG.registered_name}/{version}")
    rows = pd.DataFrame({"x": [-1.0, 0.5, 1.5, 4.0]})

    served = packaging.load_served(folder)
    assert served.raw(rows).tolist() == mlflow.sklearn.load_model(str(folder)).predict_proba(rows)[:, 1].tolist()
    # In a fresh process: loading and scoring the folder leaves MLflow unimported.
    script = ("import sys, pandas as pd\n"
              "from mlops_platform.ml.packaging import load_served\n"
              f"model = load_served({str(folder)!r})\n"
              "print(model.raw(pd.DataFrame({'x': [4.0]}))[0], 'mlflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    probability, imported = out.stdout.split()
    assert float(probability) == pytest.approx(served.raw(pd.DataFrame({"x": [4.0]}))[0]) and imported == "False"
