"""The serving process is its own small program: it imports no Dagster and no orchestration code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlops_platform_tests.serving.support import PROJECT

pytestmark = pytest.mark.timeout(120)

SERVING_MODULES = [
    "mlops_platform.serving.__main__", "mlops_platform.serving.process", "mlops_platform.serving.server",
    "mlops_platform.serving.endpoints", "mlops_platform.serving.scoring", "mlops_platform.serving.pool",
    "mlops_platform.serving.inference_log", "mlops_platform.serving.inference_table",
    "mlops_platform.serving.deploy", "mlops_platform.serving.online_features", "mlops_platform.storage.delta",
]


def imported_after(modules: list[str]) -> list[str]:
    script = (f"import importlib, json, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
              "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_serving_entry_point_imports_no_dagster_and_no_orchestration_code() -> None:
    loaded = imported_after(SERVING_MODULES)

    assert "dagster" not in loaded
    upward = [m for m in loaded if m.startswith(("mlops_platform.resources", "mlops_platform.defs",
                                                 "mlops_platform.features", "mlops_platform.cli"))]
    assert upward == []


def test_the_check_sees_an_import_of_dagster() -> None:
    assert "dagster" in imported_after(["mlops_platform.resources.serving"])
