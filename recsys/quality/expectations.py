"""Our two custom Great Expectations expectations. Importing this module registers them with GE.

- ``expect_column_values_to_be_finite``: ``expect_column_values_to_be_between`` cannot say it (Spark orders NaN
  above every number, and a bound of ±inf lets infinities through). A row-wise (map) expectation keeps GE's
  counting, ``mostly`` and unexpected samples.
- ``expect_no_unexpected_rows``: GE's ``UnexpectedRowsExpectation`` runs its query twice (a count and a
  200-row fetch) even when it returns nothing; this one only counts, which halves the cost of a join-heavy
  rule on the passing path. The gate re-runs a failed one as the stock expectation to fetch the rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from great_expectations.execution_engine import PandasExecutionEngine, SparkDFExecutionEngine
from great_expectations.expectations.core.unexpected_rows_expectation import UnexpectedRowsExpectation
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


class ExpectNoUnexpectedRows(UnexpectedRowsExpectation):
    """Expect ``unexpected_rows_query`` (Spark SQL over ``{batch}``) to return no row; observed = its row count."""

    metric_dependencies: ClassVar[tuple[str, ...]] = ("unexpected_rows_query.row_count",)

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                  execution_engine: Any = None) -> dict:
        count = metrics["unexpected_rows_query.row_count"]
        return {"success": count == 0, "result": {"observed_value": count}}
