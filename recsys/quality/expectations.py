"""The one custom Great Expectations expectation we need: scores must be finite.

``expect_column_values_to_be_between`` cannot say it: Spark orders NaN above every number, and a bound of
±inf lets infinities through. A row-wise (map) expectation keeps GE's counting, ``mostly`` and unexpected
samples. Importing this module registers the metric and the expectation with GE.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from great_expectations.execution_engine import PandasExecutionEngine, SparkDFExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)


class ColumnValuesFinite(ColumnMapMetricProvider):
    """Row condition: the value is neither NaN nor ±infinity (nulls are left to a not-null expectation)."""

    condition_metric_name = "column_values.finite"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return np.isfinite(column.astype("float64"))

    @column_condition_partial(engine=SparkDFExecutionEngine)
    def _spark(cls, column, **kwargs):
        from pyspark.sql import functions as F

        return ~F.isnan(column) & (F.abs(column) != F.lit(float("inf")))


class ExpectColumnValuesToBeFinite(ColumnMapExpectation):
    """Expect every non-null value of a numeric column to be a finite number (no NaN, no ±inf)."""

    map_metric: ClassVar[str] = "column_values.finite"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    args_keys: ClassVar[tuple[str, ...]] = ("column",)
