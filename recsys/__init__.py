"""Recommendation batch system on the Amazon Reviews 2023 dump (Spark + Delta + GE + Airflow + Flask)."""

__version__ = "0.1.0"
