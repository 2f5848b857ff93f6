"""A registered model that loads but cannot score: what a bad deploy looks like to the smoke test."""

import mlflow.pyfunc


class UnscorableModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("this model version cannot score")
