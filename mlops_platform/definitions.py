"""Code location entry point for `dagster dev -w workspace.yaml` and `dg dev`: the environment picks the graph."""

import dagster as dg

from mlops_platform.defs import build_definitions
from mlops_platform.settings import load_settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
