"""What loading the definitions and starting the serving process import: none of the heavy libraries they do not use.

MLflow, matplotlib, scikit-learn and the Databricks SDK cost seconds each; the code location is loaded by `dagster
definitions validate`, the webserver, the daemon and every run's process, and the serving process must be ready in
seconds. A step imports what it uses when it runs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("mlflow", "matplotlib", "evidently", "optuna", "hyperopt", "databricks.sdk")
# What training and scoring need, and the serving process loads with its model.
MODELLING = ("sklearn", "scipy")
# Building the graph, as a code server does: the decorated function runs only when it is called.
DEFINITIONS = "mlops_platform.definitions; mlops_platform.definitions.defs()"


def _imported(statement: str, watched: tuple[str, ...]) -> list[str]:
    script = (f"import sys, {statement}\n"
              f"print(','.join(name for name in {watched!r} if name in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600)
    return [name for name in out.stdout.strip().split(",") if name]


@pytest.mark.parametrize("statement", [DEFINITIONS, "mlops_platform.cli"])
def test_building_the_definitions_and_loading_the_cli_import_no_heavy_library(statement):
    assert _imported(statement, (*HEAVY, *MODELLING)) == []


def test_the_serving_process_imports_neither_dagster_nor_mlflow():
    assert _imported("mlops_platform.serving.server", ("dagster", *HEAVY)) == []


def test_the_watch_list_would_see_an_import():
    # The check can fail: a module that imports MLflow is reported.
    assert _imported("mlflow", ("mlflow",)) == ["mlflow"]
