"""Prove deletions: look for ids that must be gone in every file under the warehouse and in the running API.

What is searched, and why it is enough:

- Erased users, everywhere: the raw bytes of *every* file (Delta commits, checkpoints, ``.crc``, data files,
  ``.npy`` snapshots, ``.jsonl`` event logs, gzip members decompressed), plus every Parquet file decoded —
  every string value of every column (nested ones included) and the footer min/max statistics — because
  compressed pages hide ids from a byte scan, and every ``.npy`` array of strings decoded element by element,
  because a fixed-width array of full-width ids is one unbroken run of id characters. The 32-character prefix
  Delta cuts string statistics to is searched too. An id is found as a whole token, JSON escapes undone
  (:mod:`recsys.catalog.mentions`): user ``U1`` is not found in ``U10``.
- Beyond the warehouse, the folders passed as ``extra`` (``recsys audit-deletions`` adds the quality folder, Great
  Expectations results and Data Docs, when it lies elsewhere, and every ``--logs DIR``): files a job or GX wrote.
- Deleted items, where serving could see them: the current versions of ``silver/*`` and ``gold/recs_*`` (files
  only earlier versions reference wait for VACUUM's window), the serving snapshots (bytes and decoded), and by
  index ``gold/interactions`` and model item factors. Bronze keeps them (the raw record, relisting brings them
  back from there), ``gold/item_index`` keeps the tombstone, ``ops/deletions`` the id.
- The API: a deleted item's ``/similar`` is a 404 and no popular list names it; an erased user gets the popular
  fallback.

Given a drop, its plain ids are searched. Without one, the ids recorded in ``ops/deletions`` are: items by id,
users by hashing every same-length window with the warehouse salt (users cannot be asked of the API then).
Findings name the file and place and the id only by a hash prefix, so the report itself leaks nothing.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import constants as C
from recsys.catalog.drops import Drop, read_drop
from recsys.catalog.mentions import Matcher
from recsys.ids import id_hash
from recsys.serve.denylist import ID, ID_HASH, KIND, KIND_ITEM, KIND_USER, read_salt

log = logging.getLogger(__name__)

STATS_PREFIX = 32                 # Delta truncates string statistics to this many characters
ITEM_SCOPE = (C.SILVER_ITEMS, C.SILVER_REVIEWS, C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR,
              "_serving/snapshots")
PARQUET_MAGIC = b"PAR1"
NPY_MAGIC = b"\x93NUMPY"
ApiGet = Callable[[str], tuple[int, dict]]     # path → (status, JSON body)


@dataclass(frozen=True)
class Finding:
    label: str                    # "user:<hash prefix>" / "item:<asin>"
    path: str                     # file (relative to the warehouse) or API request
    where: str                    # bytes | parquet value <column> | parquet statistics <column> | api …

    def __str__(self) -> str:
        return f"FOUND {self.label} in {self.path} ({self.where})"


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    users: int = 0
    items: int = 0
    api_requests: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {"ok": self.ok, "files_scanned": self.files, "bytes_scanned": self.bytes, "users": self.users,
                "items": self.items, "api_requests": self.api_requests, "notes": self.notes,
                "findings": [str(f) for f in self.findings]}


@dataclass
class Targets:
    """What to look for: one matcher per kind, plus what the API and index checks need."""

    users: Matcher
    items: Matcher
    plain_users: dict[str, str] = field(default_factory=dict)     # id → label (only from a drop)
    plain_items: dict[str, str] = field(default_factory=dict)


def _user_label(salt: str | None, user: str) -> str:
    return f"user:{id_hash(salt or '', user)[:12]}"


def targets_from_drop(drop: Drop, warehouse: Path) -> Targets:
    salt = read_salt(warehouse)
    if drop.kind == KIND_USER:
        plain = {r.id: _user_label(salt, r.id) for r in drop.rows}
        needles = dict(plain)
        for user, label in plain.items():
            if len(user) > STATS_PREFIX:
                needles[user[:STATS_PREFIX]] = f"{label} (32-char prefix)"
        lengths = {min(len(u), STATS_PREFIX) for u in plain} | {len(u) for u in plain}
        return Targets(Matcher(needles, lengths), Matcher({}, ()), plain_users=plain)
    plain = {r.id: f"item:{r.id}" for r in drop.rows}
    return Targets(Matcher({}, ()), Matcher(plain, {len(i) for i in plain}), plain_items=plain)


def targets_from_ledger(warehouse: Path) -> Targets:
    """Every id recorded in ``ops/deletions`` (users by hash, items by id; relisted items excluded)."""
    from deltalake import DeltaTable

    path = warehouse / C.DELETIONS
    if not (path / "_delta_log").is_dir():
        return Targets(Matcher({}, ()), Matcher({}, ()))
    table = DeltaTable(str(path)).to_pyarrow_table(columns=[KIND, ID_HASH, ID, "id_length", "status"])
    rows = [r for r in table.to_pylist() if r["status"] != "relisted"]
    salt = read_salt(warehouse)
    users = {r[ID_HASH]: f"user:{r[ID_HASH][:12]}" for r in rows if r[KIND] == KIND_USER}
    lengths = {r["id_length"] for r in rows if r[KIND] == KIND_USER and r["id_length"]}
    items = {r[ID]: f"item:{r[ID]}" for r in rows if r[KIND] == KIND_ITEM and r[ID]}
    if users and not salt:
        raise RuntimeError("ops/deletions holds erased users but ops/_salt is missing: nothing can be checked")
    return Targets(Matcher(users, lengths, salt=salt), Matcher(items, {len(i) for i in items}),
                   plain_items=items)


# --- files ---------------------------------------------------------------------------------------------------

def _files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root, followlinks=False):
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _in_item_scope(rel: str) -> bool:
    return any(rel == scope or rel.startswith(scope + "/") for scope in ITEM_SCOPE)


def _leaves(array: pa.Array, name: str) -> Iterator[tuple[str, pa.Array]]:
    """The string/binary leaf arrays of a (possibly nested) column."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        yield name, array
    elif pa.types.is_dictionary(kind):
        yield from _leaves(array.dictionary, name)
    elif pa.types.is_map(kind):
        yield from _leaves(array.keys, f"{name}.key")
        yield from _leaves(array.items, f"{name}.value")
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _leaves(array.flatten(), name)
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            yield from _leaves(array.field(i), f"{name}.{kind.field(i).name}")


def _blob(array: pa.Array) -> bytes:
    """Distinct values joined by newlines (never an id character): one matcher pass per column chunk."""
    values = pc.unique(array.drop_null()).to_pylist()
    return b"\n".join(v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass") for v in values)


def _parquet_texts(path: Path) -> Iterator[tuple[str, bytes]]:
    """(place, text) for every footer statistic and every decoded string value of a Parquet file."""
    handle = pq.ParquetFile(path)
    meta = handle.metadata
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for ci in range(group.num_columns):
            column = group.column(ci)
            stats = column.statistics
            textual = column.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
            if stats is not None and stats.has_min_max and textual:
                texts = [v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass")
                         for v in (stats.min, stats.max)]
                yield f"parquet statistics {column.path_in_schema}", b"\n".join(texts)
        table = handle.read_row_group(rg)
        for name in table.column_names:
            for chunk in table[name].chunks:
                for leaf_name, leaf in _leaves(chunk, name):
                    yield f"parquet value {leaf_name}", _blob(leaf)


def _npy_text(data: bytes) -> bytes:
    """The elements of a ``.npy`` array of strings, one per line (b"" for other arrays or a damaged file)."""
    import io

    import numpy as np

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return b""
    if array.dtype.kind == "S":
        return b"\n".join(array.reshape(-1).tolist())
    if array.dtype.kind == "U":
        return "\n".join(array.reshape(-1).tolist()).encode("utf-8", "surrogatepass")
    return b""


def scan_file(path: Path, rel: str, matchers: list[Matcher]) -> list[tuple[str, str]]:
    """(label, place) of every needle in the file: raw bytes, gzip content, decoded Parquet."""
    data = path.read_bytes()
    found = [(label, "bytes") for m in matchers for label in m.find(data)]
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = b""
        found += [(label, "gzip content") for m in matchers for label in m.find(inner)]
    if data[:6] == NPY_MAGIC:
        text = _npy_text(data)
        found += [(label, "npy values") for m in matchers for label in m.find(text)]
    if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC:
        try:
            for place, text in _parquet_texts(path):
                found += [(label, place) for m in matchers for label in m.find(text)]
        except (pa.ArrowException, OSError) as exc:
            found.append(("unreadable", f"parquet could not be decoded: {exc}"[:200]))
    return found


def _delta_root(path: Path, root: Path) -> Path | None:
    """The Delta table folder holding the data file ``path`` (None for a log file or a file outside tables)."""
    for parent in path.parents:
        if parent == root or parent.name == "_delta_log":
            return None
        if (parent / "_delta_log").is_dir():
            return parent
    return None


class LiveFiles:
    """Which data files each table's current version references (read with delta-rs, once per table)."""

    def __init__(self) -> None:
        self._tables: dict[Path, set[Path]] = {}

    def __call__(self, path: Path, root: Path) -> bool:
        """False for a data file only earlier versions reference: history kept for the purge window."""
        table = _delta_root(path, root)
        if table is None:
            return True
        if table not in self._tables:
            from urllib.parse import unquote

            from deltalake import DeltaTable

            uris = [u.removeprefix("file://") for u in DeltaTable(str(table)).file_uris()]
            self._tables[table] = {Path(u).resolve() for u in uris} | {Path(unquote(u)).resolve() for u in uris}
        return path in self._tables[table]


def scan_warehouse(warehouse: Path, targets: Targets, report: AuditReport) -> None:
    """Erased users in every file; deleted items in the current version of the tables serving reads.

    A data file only earlier versions of a table reference (a MERGE removed the item's rows) is history: no
    reader of the current version sees it, and VACUUM deletes it once ``deletions.purge_window_hours`` have
    passed, so concurrent readers of the version before keep their files. Erased users get no such window:
    their tables' history is rewritten at once (or by the first run after the window), and every file counts.
    """
    root = Path(warehouse).resolve()
    live = LiveFiles()
    history = 0
    for path in _files(root):
        rel = str(path.relative_to(root))
        items = targets.items if targets.items and _in_item_scope(rel) else None
        if items is not None and not live(path, root):
            items, history = None, history + 1
        _scan_one(path, rel, [m for m in (targets.users, items) if m], report)
    if history:
        report.notes.append(f"{history} data file(s) of earlier table versions not searched for deleted items "
                            "(history VACUUM removes after deletions.purge_window_hours)")


def scan_folder(folder: Path, targets: Targets, report: AuditReport) -> None:
    """Erased users in a folder outside the warehouse (quality results, job logs); findings name it absolutely."""
    root = Path(folder).resolve()
    if not root.is_dir():
        report.notes.append(f"not scanned (no such folder): {root}")
        return
    for path in _files(root):
        _scan_one(path, str(path), [m for m in (targets.users,) if m], report)


def _scan_one(path: Path, rel: str, matchers: list[Matcher], report: AuditReport) -> None:
    report.files += 1
    report.bytes += path.stat().st_size
    if matchers:
        for label, place in sorted(set(scan_file(path, rel, matchers))):
            report.findings.append(Finding(label, rel, place))


def check_item_indices(warehouse: Path, targets: Targets, report: AuditReport) -> None:
    """Deleted items' indices must be gone from gold/interactions and every model's item-keyed folders."""
    import pyarrow.dataset as pds
    from deltalake import DeltaTable

    from recsys.catalog.files import ITEM_PREFIX, model_dirs

    index = warehouse / C.ITEM_INDEX
    if not targets.plain_items or not (index / "_delta_log").is_dir():
        return
    table = DeltaTable(str(index)).to_pyarrow_table(columns=[C.ITEM_ID, C.ITEM_IDX])
    idx = {r[C.ITEM_IDX]: r[C.ITEM_ID] for r in table.to_pylist() if r[C.ITEM_ID] in targets.plain_items}
    if not idx:
        return
    wanted = pa.array(sorted(idx), type=pa.int32())
    sources = []
    if (warehouse / C.INTERACTIONS / "_delta_log").is_dir():
        sources.append((C.INTERACTIONS, DeltaTable(str(warehouse / C.INTERACTIONS))
                        .to_pyarrow_table(columns=[C.ITEM_IDX])[C.ITEM_IDX]))
    for model in model_dirs(warehouse):
        for folder in sorted(p for p in model.iterdir() if p.is_dir() and p.name.startswith(ITEM_PREFIX)):
            sources.append((str(folder.relative_to(warehouse.resolve())),
                            pds.dataset(folder, format="parquet").to_table(columns=["id"])["id"]))
    for name, column in sources:
        present = pc.filter(column, pc.is_in(column.cast(pa.int32()), value_set=wanted)).unique().to_pylist()
        for value in present:
            report.findings.append(Finding(f"item:{idx[value]}", name, f"item index {value}"))


# --- API -----------------------------------------------------------------------------------------------------

def http_get(base_url: str, timeout: float = 10.0) -> ApiGet:
    """A JSON GET against a running API (``--api http://127.0.0.1:8000``)."""
    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if body else {}
    return get


def check_api(get: ApiGet, targets: Targets, report: AuditReport) -> None:
    """Erased users get the popular fallback; deleted items have no /similar and are in no popular list."""
    for user, label in targets.plain_users.items():
        status, body = get(f"/v1/users/{quote(user, safe='')}/recommendations")
        report.api_requests += 1
        if status != 200 or body.get("source") != "popular":
            report.findings.append(Finding(label, "GET /v1/users/…/recommendations",
                                           f"api status {status} source {body.get('source')!r}"))
    if not targets.plain_items:
        return
    for asin, label in targets.plain_items.items():
        status, _ = get(f"/v1/items/{quote(asin, safe='')}/similar")
        report.api_requests += 1
        if status != 404:
            report.findings.append(Finding(label, f"GET /v1/items/{asin}/similar", f"api status {status}"))
    status, body = get("/v1/popular?k=100")
    if status == 400:
        status, body = get("/v1/popular")
    report.api_requests += 1
    listed = {i.get(C.ITEM_ID) for i in body.get("items", [])} if status == 200 else set()
    for asin in sorted(listed & set(targets.plain_items)):
        report.findings.append(Finding(targets.plain_items[asin], "GET /v1/popular", "api popular list"))


def audit(warehouse: Path | str, drop: Path | str | None = None, api: ApiGet | str | None = None,
          extra: Iterable[Path | str] = ()) -> AuditReport:
    """Scan the warehouse, the ``extra`` folders outside it (quality results, logs) and the API (given a URL or a
    getter) for the ids of ``drop`` or of the ledger."""
    warehouse = Path(warehouse).resolve()
    if not warehouse.is_dir():
        raise FileNotFoundError(f"warehouse not found: {warehouse}")
    targets = targets_from_drop(read_drop(drop), warehouse) if drop is not None else targets_from_ledger(warehouse)
    report = AuditReport(users=len(targets.plain_users) or len(targets.users.needles), items=len(targets.items.needles))
    scan_warehouse(warehouse, targets, report)
    for folder in extra:
        if not Path(folder).resolve().is_relative_to(warehouse):
            scan_folder(Path(folder), targets, report)
    check_item_indices(warehouse, targets, report)
    if api is not None:
        check_api(http_get(api) if isinstance(api, str) else api, targets, report)
        if drop is None and targets.users:
            report.notes.append("erased users are known only by hash: the API was not asked about them")
    return report
