"""Model training, tuning and the promotion gate: plain functions over MLflow, with no Dagster imports."""
