"""Does a value mention an id? One rule, in Spark and in Python: the id occurs inside a run of id characters.

Ids (user ids, asins) are made of ``[A-Za-z0-9_-]`` (the API's id pattern, enforced on drops). Every occurrence
of an id in any text — a raw JSON line, a review, a Delta log line, a file's raw bytes — therefore lies inside a
maximal run of those characters, so the windows of the id's length over runs at least that long find every
occurrence (substring semantics, e.g. ``\\nAE…`` in an escaped JSON string), while runs shorter than every id
sought (most words) cost nothing. Windows are compared by salted hash (``recsys.serve.denylist.id_hash``), so
the same code works where only hashes are kept: ingest, silver and audits without a drop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

ID_HASH = "id_hash"
NOT_ID_CHARS = r"[^A-Za-z0-9_\-]+"
_RUN = re.compile(rb"[A-Za-z0-9_\-]+")
_TEXT_TYPES = (T.StringType, T.ArrayType, T.MapType, T.StructType)


# --- Spark ---------------------------------------------------------------------------------------------------

def salted_hash(value: Column, salt: str) -> Column:
    """sha256(salt + value) as lowercase hex: the same digest as ``id_hash`` in Python."""
    return F.sha2(F.concat(F.lit(salt), value), 256)


def windows(text: Column, lengths: Sequence[int]) -> Column:
    """Every substring of ``text`` of one of ``lengths`` that lies inside a run of id characters (array<string>)."""
    runs = F.split(F.coalesce(text, F.lit("")), NOT_ID_CHARS)
    parts = [_windows_of(runs, n) for n in sorted(set(lengths))]
    if not parts:
        return F.array().cast("array<string>")
    return parts[0] if len(parts) == 1 else F.concat(*parts)


def _windows_of(runs: Column, n: int) -> Column:
    """Windows of length ``n`` over the runs at least that long (Spark lambdas take no default arguments)."""
    def of_run(run: Column) -> Column:
        return F.transform(F.sequence(F.lit(1), F.length(run) - n + 1), lambda i: run.substr(i, F.lit(n)))

    return F.flatten(F.transform(F.filter(runs, lambda run: F.length(run) >= n), of_run))


def as_text(df: DataFrame, name: str) -> Column:
    """A column as searchable text: strings as they are, arrays of strings joined, other nested types as JSON."""
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if isinstance(dtype, T.StringType):
        return col
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.StringType):
        return F.array_join(col, " ")
    return F.to_json(col)


def text_columns(df: DataFrame, skip: Iterable[str] = ()) -> list[str]:
    """Columns that can hold free text (strings and nested types), minus ``skip``."""
    skip = set(skip)
    return [f.name for f in df.schema.fields if isinstance(f.dataType, _TEXT_TYPES) and f.name not in skip]


def mention_hits(df: DataFrame, columns: Sequence[str], keys: Sequence[str], hashes: DataFrame, salt: str,
                 lengths: Sequence[int]) -> DataFrame:
    """(``keys``…, id_hash) for every row of ``df`` whose ``columns`` mention one of ``hashes`` (id_hash column)."""
    text = F.concat_ws(" ", *[as_text(df, c) for c in columns])
    found = (df.select(*[F.col(f"`{k}`") for k in keys], F.explode(F.array_distinct(windows(text, lengths)))
                       .alias("_window"))
             .withColumn(ID_HASH, salted_hash(F.col("_window"), salt)))
    return found.join(F.broadcast(hashes.select(ID_HASH).distinct()), ID_HASH).select(*keys, ID_HASH).distinct()


# --- Python twin ---------------------------------------------------------------------------------------------

class Matcher:
    """Finds ids inside bytes or strings by the rule above; labels say which id (never the id itself).

    ``needles`` maps a window value to its label: plain ids (and prefixes) when a drop is given, or salted hashes
    with ``salt`` set when only ``ops/deletions`` is known (each window is then hashed before the lookup).
    """

    def __init__(self, needles: Mapping[str, str], lengths: Iterable[int], salt: str | None = None):
        self.needles = {k.encode("utf-8") if salt is None else k: v for k, v in needles.items()}
        self.lengths = sorted(set(lengths))
        self.salt = None if salt is None else salt.encode("utf-8")
        self.shortest = self.lengths[0] if self.lengths else 1 << 30
        self._runs = re.compile(rb"[A-Za-z0-9_\-]{%d,}" % self.shortest) if self.lengths else None

    def __bool__(self) -> bool:
        return bool(self.needles and self.lengths)

    def _lookup(self, window: bytes) -> str | None:
        if self.salt is None:
            return self.needles.get(window)
        return self.needles.get(hashlib.sha256(self.salt + window).hexdigest())

    def find(self, data: bytes | str) -> set[str]:
        """Labels of every needle occurring in ``data``."""
        if not self or self._runs is None:
            return set()
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        out: set[str] = set()
        for match in self._runs.finditer(raw):
            out.update(self._in_run(match.group()))
        return out

    def _in_run(self, run: bytes) -> Iterator[str]:
        for n in self.lengths:
            if len(run) < n:
                break
            if self.salt is None and len(run) > 4096:
                yield from self._in_long_run(run, n)
                continue
            for start in range(len(run) - n + 1):
                label = self._lookup(run[start:start + n])
                if label is not None:
                    yield label

    def _in_long_run(self, run: bytes, n: int) -> Iterator[str]:
        """Plain needles in a very long run (e.g. a fixed-width id array in a ``.npy``): one vectorised pass."""
        import numpy as np

        wanted = [k for k in self.needles if len(k) == n]
        if not wanted:
            return
        buffer = np.frombuffer(run, dtype=np.uint8)
        view = np.ndarray(shape=(len(run) - n + 1,), dtype=f"S{n}", buffer=buffer, strides=(1,))
        # S-dtype comparison strips trailing NULs; id characters are never NUL, so equality is exact here.
        hits = np.isin(view, np.array(wanted, dtype=f"S{n}"))
        for window in set(view[hits].tolist()):
            yield self.needles[window]
