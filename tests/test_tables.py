"""Delta table creation shared by parallel jobs (the DAG trains its models as parallel tasks)."""

from __future__ import annotations

import threading

from recsys import tables as T


def test_concurrent_creators_of_one_table_all_succeed(spark, tmp_path):
    """Without the race handling, the losers fail with a concurrent protocol change or "not a Delta table"."""
    errors: list[str] = []

    def create() -> None:
        try:
            T.ensure_table(spark, tmp_path, T.DELETIONS)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    table = spark.read.format("delta").load(T.table_path(tmp_path, T.DELETIONS.path))
    assert table.columns == list(T.DELETIONS.columns) and table.count() == 0

