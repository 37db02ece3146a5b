"""Ranking metrics below every layer that ranks: their definitions (:mod:`~recsys.metrics.definitions`) and the
numpy implementation (:mod:`~recsys.metrics.python_metrics`), used by evaluation (whose Spark twin,
:mod:`recsys.evaluate.spark_metrics`, gives the same numbers), model selection and the multi-stage model."""
