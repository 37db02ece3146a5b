"""Body of ``recsys metrics``: the metric code on any two JSONL files of lists.

Each input line is ``{"user_id": …, "items": [...]}`` (one line per user; blank lines skipped). Ids are
JSON strings or numbers; within one run they are made comparable across both files the same way for both
engines (all integers → int, all numbers → float, otherwise every id becomes its JSON text, so ``1`` and
``"1"`` stay different ids). Every bad input raises ``ValueError`` with a one-line reason naming the file
and line, for the CLI to print and exit non-zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from recsys.constants import ITEMS, USER_ID
from recsys.metrics.definitions import USERS

Engine = Literal["spark", "numpy"]
ENGINES: tuple[str, ...] = ("spark", "numpy")

_INT64 = (-(2**63), 2**63 - 1)


def read_lists(path: str | Path, role: str) -> dict[Any, list[Any]]:
    """``{user_id: items}`` from a JSONL file, validated line by line (``role`` names the file in errors)."""
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{role} file not found: {file}")
    if not file.is_file():
        raise ValueError(f"{role} path is not a file: {file}")
    lists: dict[Any, list[Any]] = {}
    first_seen: dict[Any, int] = {}
    try:
        with file.open("r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                user, items = _parse_line(line, f"{role} {file}:{number}")
                if user in first_seen:
                    raise ValueError(
                        f"{role} {file}:{number}: user_id {user!r} repeats line {first_seen[user]}"
                    )
                first_seen[user] = number
                lists[user] = items
    except UnicodeDecodeError as exc:
        raise ValueError(f"{role} {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{role} file unreadable: {file} ({exc.strerror or exc})") from None
    return lists


def _parse_line(line: str, where: str) -> tuple[Any, list[Any]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with {USER_ID!r} and {ITEMS!r}")
    if USER_ID not in record or ITEMS not in record:
        missing = [key for key in (USER_ID, ITEMS) if key not in record]
        raise ValueError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    user, items = record[USER_ID], record[ITEMS]
    if not _is_id(user):
        raise ValueError(f"{where}: {USER_ID} must be a string or a number, got {json.dumps(user)}")
    if not isinstance(items, list):
        raise ValueError(f"{where}: {ITEMS} must be a JSON array, got {json.dumps(items)[:60]}")
    for item in items:
        if not _is_id(item):
            raise ValueError(f"{where}: every item must be a string or a number, got {json.dumps(item)[:60]}")
    return user, items


def _is_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def _canonical(values: Iterable[Any]) -> tuple[type, Any]:
    """One id type for a set of JSON ids, and the function mapping each id to it (see module docstring)."""
    values = list(values)
    if all(isinstance(v, int) and _INT64[0] <= v <= _INT64[1] for v in values):
        return int, int
    if all(isinstance(v, str) for v in values):
        return str, str
    if all(isinstance(v, (int, float)) for v in values):
        return float, float
    return str, lambda v: json.dumps(v, ensure_ascii=False)


def _normalise(
    predictions: dict[Any, list[Any]], truth: dict[Any, list[Any]]
) -> tuple[dict[Any, list[Any]], dict[Any, list[Any]], type, type]:
    user_type, user_key = _canonical([*predictions, *truth])
    item_type, item_key = _canonical(x for lists in (predictions, truth) for xs in lists.values() for x in xs)
    # Two JSON ids that meet under the canonical type (e.g. 1 and 1.0) are one user, as in Python.
    def convert(lists: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        return {user_key(u): [item_key(x) for x in xs] for u, xs in lists.items()}

    return convert(predictions), convert(truth), user_type, item_type


def run_metrics(
    predictions_path: str | Path,
    truth_path: str | Path,
    k: int,
    engine: Engine = "numpy",
    *,
    spark: Any = None,
) -> dict[str, float]:
    """Every ranking metric at ``k`` over the two files: ``{"map@K", "ndcg@K", "precision@K", "recall@K",
    "hit_rate@K", "mrr@K", "users"}`` (population rule of :mod:`recsys.metrics.definitions`).

    ``engine="spark"`` runs :mod:`~recsys.evaluate.spark_metrics` on a session from the settings (or
    ``spark`` if given); the lists are parsed and validated here first either way.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--k must be an integer >= 1, got {k!r}")
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    predictions, truth, user_type, item_type = _normalise(
        read_lists(predictions_path, "predictions"), read_lists(truth_path, "truth")
    )
    if not any(truth.values()):
        raise ValueError(f"no user in truth file {truth_path} has a relevant item: metrics are undefined")
    if engine == "numpy":
        from recsys.metrics import python_metrics

        return python_metrics.ranking_metrics(predictions, truth, [k])
    from recsys.evaluate import spark_metrics

    session = spark if spark is not None else _session()
    schema = _schema(user_type, item_type)
    return spark_metrics.ranking_metrics(
        session.createDataFrame(list(predictions.items()), schema),
        session.createDataFrame(list(truth.items()), schema),
        [k],
    )


def _schema(user_type: type, item_type: type):
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StringType, StructField, StructType

    spark_type = {int: LongType(), float: DoubleType(), str: StringType()}
    return StructType([
        StructField(USER_ID, spark_type[user_type], nullable=False),
        StructField(ITEMS, ArrayType(spark_type[item_type], containsNull=False), nullable=False),
    ])


def _session():
    from recsys.config import load_settings
    from recsys.spark import get_spark

    return get_spark(load_settings().spark)


def format_result(result: dict[str, float]) -> str:
    """Plain-text rendering (``--json`` prints ``json.dumps(result)`` instead): one ``name value`` per line."""
    width = max(len(name) for name in result)
    return "\n".join(
        f"{name:<{width}}  {value}" if name == USERS else f"{name:<{width}}  {value:.6f}"
        for name, value in result.items()
    )
