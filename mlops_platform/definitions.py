"""Code location entry point for `dagster dev -w workspace.yaml`, `dg dev` and `dg check defs`: the defs folder,
autoloaded as ``dg`` expects (``[tool.dg] defs_module`` in pyproject.toml); the environment picks the graph
(``mlops_platform.defs.usecases``)."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
