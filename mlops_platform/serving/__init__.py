"""Local model serving that speaks the Databricks Model Serving contract.

A deploy step (:func:`deploy_endpoint_config`) resolves MLflow model URIs to concrete versions, copies their
artifacts and writes ``<serving_dir>/endpoints/<name>.json``. One long-running process,
``python -m mlops_platform.serving``, serves every endpoint of that folder, swaps in new configurations
without a restart, looks features up in an in-memory online store, splits traffic between served models by
request id and logs every request to a Delta inference table.
"""

from mlops_platform.serving.config import (
    EndpointConfig,
    EndpointConfigError,
    ServedModel,
    deploy_endpoint_config,
    endpoint_config_path,
    publish_online_store,
)

__all__ = [
    "EndpointConfig",
    "EndpointConfigError",
    "ServedModel",
    "deploy_endpoint_config",
    "endpoint_config_path",
    "publish_online_store",
]
