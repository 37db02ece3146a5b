"""The little the JVM-free readers (the API, ``recsys.ops``) need from Delta: the latest commit number and a filtered
read (delta-rs)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

_COMMIT = re.compile(r"^(\d{20})\.json$")


def log_version(table: Path) -> int:
    """Latest commit number of the Delta table at ``table`` (-1 when there is none), from file names only.

    A directory listing costs microseconds, so it can run every few seconds (or every request) to notice a new
    commit; loading the table to ask ``DeltaTable.version()`` would cost milliseconds.
    """
    try:
        with os.scandir(table / "_delta_log") as entries:
            versions = [int(m.group(1)) for e in entries if (m := _COMMIT.match(e.name))]
    except (FileNotFoundError, NotADirectoryError):
        return -1
    return max(versions, default=-1)


def read_table(table: Path, columns: list[str], filters: list[tuple[str, str, object]] | None = None) -> pa.Table:
    """The current version of a Delta table as Arrow (``filters`` in DNF, pushed down to partitions and files)."""
    return DeltaTable(str(table)).to_pyarrow_table(columns=columns, filters=filters)
