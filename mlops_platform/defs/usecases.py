"""Every enabled use case's graph, as ``dg`` autoloads it from the defs folder (``mlops_platform.definitions``).

``config/usecases/*.yaml`` stays the source of truth: the environment (``$MLOPS_ENV``, ``config/environments``) names
the use cases, and ``build_definitions`` turns each one's configuration into its assets, checks, jobs, schedules and
sensors. Anything else a module of this folder defines (``dg scaffold defs dagster.asset ...``) is loaded beside it.
"""

import dagster as dg

from mlops_platform.defs import build_definitions
from mlops_platform.settings import load_settings


@dg.definitions
def usecases() -> dg.Definitions:
    return build_definitions(load_settings())
