"""Local model serving that speaks the Databricks Model Serving contract: its own small program.

``deploy.py`` resolves MLflow model URIs to concrete versions, copies their artifacts and writes
``<serving_dir>/endpoints/<name>.json``. One long-running process (``python -m mlops_platform.serving``,
``process.py``) serves every endpoint of that folder: it swaps in new configurations without a restart, looks
features up in an in-memory online store, routes traffic between served models by request id (``routing.py``),
scores off the event loop (``pool.py``, ``scoring.py``) and logs every answered request to a local spool before
answering, then to the Delta inference table (``inference_log.py``, ``inference_table.py``). It imports no Dagster
and no orchestration code; the resources and assets sit on top of it.
"""
