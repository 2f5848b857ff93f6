"""Tests of the model-serving process."""
