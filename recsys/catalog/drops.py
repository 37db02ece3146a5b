"""Deletion drops: the files a catalog or privacy team hands over (contract in the README, "Deletions and user erasure").

CSV with a header — ``parent_asin,reason,requested_at`` (item deletions) or ``user_id,reason,requested_at``
(user erasures) — or JSONL objects with the same keys; ``requested_at`` is ISO-8601 UTC. The kind is read from
the header (or the keys), so one folder may hold both kinds. A malformed file is refused whole, naming the bad
line: half-applying an erasure request is worse than refusing it loudly.
"""

from __future__ import annotations

import csv
import json

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from recsys.constants import ITEM_ID, REASON, USER_ID
from recsys.ids import is_valid_id
from recsys.serve.denylist import KIND_ITEM, KIND_USER

REQUESTED_AT = "requested_at"
ID_COLUMNS = {ITEM_ID: KIND_ITEM, USER_ID: KIND_USER}
SUFFIXES = (".csv", ".jsonl")


class DropError(ValueError):
    """A drop file that cannot be applied; the message names the file and line."""


@dataclass(frozen=True)
class DropRow:
    kind: str                  # "item" | "user"
    id: str                    # plain id: lives only in memory while the drop is applied
    reason: str
    requested_at: datetime     # timezone-aware UTC


@dataclass(frozen=True)
class Drop:
    path: Path
    kind: str
    rows: tuple[DropRow, ...]  # one per id (the latest request wins)


def parse_time(value: object, where: str) -> datetime:
    """ISO-8601 → aware UTC datetime (a naive value is taken as UTC, as the contract says it is)."""
    if not isinstance(value, str) or not value.strip():
        raise DropError(f"{where}: requested_at must be an ISO-8601 UTC timestamp")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DropError(f"{where}: requested_at {value[:40]!r} is not ISO-8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _kind_of(keys: Iterable[str], where: str) -> tuple[str, str]:
    keys = set(keys)
    ids = keys & set(ID_COLUMNS)
    expected = {REASON, REQUESTED_AT}
    if len(ids) != 1 or keys - ids != expected:
        raise DropError(f"{where}: expected the columns parent_asin,reason,requested_at or "
                        f"user_id,reason,requested_at, got {','.join(sorted(keys))[:200]}")
    column = ids.pop()
    return column, ID_COLUMNS[column]


def _row(record: dict, column: str, kind: str, where: str) -> DropRow:
    value = record.get(column)
    if not isinstance(value, str) or not is_valid_id(value.strip()):
        raise DropError(f"{where}: {column} must be 1-64 characters of A-Z a-z 0-9 _ -")
    reason = record.get(REASON)
    if reason is not None and not isinstance(reason, str):
        raise DropError(f"{where}: reason must be a string")
    return DropRow(kind, value.strip(), (reason or "").strip(), parse_time(record.get(REQUESTED_AT), where))


def _csv_records(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        yield "header", {name: None for name in reader.fieldnames}
        for record in reader:
            if None in record or any(v is None for v in record.values()):
                raise DropError(f"{path}:{reader.line_num}: wrong number of fields")
            yield f"{path}:{reader.line_num}", record


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DropError(f"{path}:{number}: not JSON") from None
            if not isinstance(record, dict):
                raise DropError(f"{path}:{number}: not a JSON object")
            yield f"{path}:{number}", record


def read_drop(path: Path | str, kind: str | None = None) -> Drop:
    """Parse and validate one drop file; ``kind`` ("item"/"user") refuses a file of the other kind."""
    path = Path(path)
    if not path.is_file():
        raise DropError(f"drop file not found: {path}")
    if path.suffix not in SUFFIXES:
        raise DropError(f"{path}: drop files are .csv or .jsonl")
    column = found = None
    rows: dict[str, DropRow] = {}
    try:
        records = _csv_records(path) if path.suffix == ".csv" else _jsonl_records(path)
        for where, record in records:
            this_column, this_kind = _kind_of(record, f"{path}" if where == "header" else where)
            if column is None:
                column, found = this_column, this_kind
            elif this_column != column:
                raise DropError(f"{where}: mixes {this_column} with {column} rows")
            if where == "header":
                continue
            row = _row(record, column, this_kind, where)
            if row.id not in rows or row.requested_at > rows[row.id].requested_at:
                rows[row.id] = row
    except UnicodeDecodeError:
        raise DropError(f"{path}: not UTF-8 text") from None
    if found is None:
        raise DropError(f"{path}: empty drop file (no header or rows)")
    if kind is not None and found != kind:
        raise DropError(f"{path}: holds {found} rows, expected {kind} rows")
    return Drop(path, found, tuple(rows[k] for k in sorted(rows)))


def find_drops(folder: Path | str) -> list[Path]:
    """Drop files (``*.csv``, ``*.jsonl``) directly in ``folder``, in name order (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DropError(f"drops folder not found: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith((".", "_")))
