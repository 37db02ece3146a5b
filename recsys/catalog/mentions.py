"""Does a value mention an id? One rule, in Spark and in Python: a whole token equal to the id.

Ids (user ids, asins) are made of ``[A-Za-z0-9_-]`` (:data:`recsys.ids.ID_CHARS`, enforced on drops and by the
API). A *token* is a maximal run of those characters, read after JSON escapes are undone (``\\nAE12`` inside a
JSON string is a newline, then ``AE12``; ``\\u0041E12`` is ``AE12``). An id is mentioned only by a token equal to
it: ``U1`` is not in ``U10``, user ``1`` is not in ``(1995)``. A short id can still equal a token of unrelated
text (``1`` in ``"rating": 1.0``), so a row that names its owner goes by its owner alone (``owner`` of
:func:`mention_hits`, :func:`owner_of_json_line` for raw lines), and tables that hold no user ids are not
searched at all (:mod:`recsys.catalog.cascade`).

Tokens are compared by salted hash (``recsys.ids.id_hash``), so the same code works where only hashes are kept:
ingest, silver and audits without a drop. Only tokens of a length some sought id has are hashed.

Undoing escapes, identically on both sides (the property tests check it): escaped backslashes (``\\\\``) first
become a space, so every backslash left escapes the next character; then ``\\uXXXX`` becomes its character when
that is an id character (a space otherwise); then ``\\b \\f \\n \\r \\t`` become a space. Every other character
that is not an id character (including non-ASCII ones and a NUL) separates tokens.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.ids import ID_CHARS, ID_JAVA_REGEX

ID_HASH = "id_hash"
NOT_ID_CHARS = rf"[^{ID_CHARS}]+"
ID_ALPHABET = string.ascii_letters + string.digits + "_-"
_TEXT_TYPES = (T.StringType, T.ArrayType, T.MapType, T.StructType)


# --- escapes -------------------------------------------------------------------------------------------------

def _hex_pattern(char: str) -> str:
    """Java regex for ``\\uXXXX`` spelling ``char``, hex digits in either case."""
    digits = f"{ord(char):04x}"
    return r"\\u" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)


def unescaped(text: Column) -> Column:
    """``text`` with JSON escapes undone as far as tokens care (see the module docstring); Spark side."""
    out = F.regexp_replace(text, r"\\\\", " ")
    for char in ID_ALPHABET:
        out = F.regexp_replace(out, _hex_pattern(char), char)
    out = F.regexp_replace(out, r"\\u[0-9a-fA-F]{4}", " ")
    out = F.regexp_replace(out, r"\\[bfnrt]", " ")
    return F.when(text.contains("\\"), out).otherwise(text)


_ESCAPED_BACKSLASH = re.compile(rb"\\\\")
_UNICODE_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
_SHORT_ESCAPE = re.compile(rb"\\[bfnrt]")


def _decoded(match: re.Match[bytes]) -> bytes:
    char = chr(int(match.group(1), 16))
    return char.encode("ascii") if char in ID_ALPHABET else b" "


def unescape_bytes(raw: bytes) -> bytes:
    """The Python twin of :func:`unescaped`, on raw bytes."""
    if b"\\" not in raw:
        return raw
    raw = _ESCAPED_BACKSLASH.sub(b" ", raw)
    raw = _UNICODE_ESCAPE.sub(_decoded, raw)
    return _SHORT_ESCAPE.sub(b" ", raw)


# --- Spark ---------------------------------------------------------------------------------------------------

def salted_hash(value: Column, salt: str) -> Column:
    """sha256(salt + value) as lowercase hex: the same digest as ``id_hash`` in Python."""
    return F.sha2(F.concat(F.lit(salt), value), 256)


def tokens(text: Column, lengths: Sequence[int]) -> Column:
    """The tokens of ``text`` whose length is one of ``lengths`` (array<string>, duplicates kept)."""
    wanted = sorted(set(lengths))
    if not wanted:
        return F.array().cast("array<string>")
    runs = F.split(unescaped(F.coalesce(text, F.lit(""))), NOT_ID_CHARS)
    return F.filter(runs, lambda run: F.length(run).isin(wanted))


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


def owner_of_json_line(line: Column) -> Column:
    """The ``user_id`` a raw JSON line names (null when it is not JSON or has none): the line's owner."""
    return F.get_json_object(line, "$.user_id")


def mention_hits(df: DataFrame, columns: Sequence[str], keys: Sequence[str], hashes: DataFrame, salt: str,
                 lengths: Sequence[int], owner: Column | None = None) -> DataFrame:
    """(``keys``…, id_hash) for every row of ``df`` that names one of ``hashes`` (id_hash column).

    With ``owner``: a row whose owner is a valid id goes by its owner alone (another user's line that happens to
    hold the token ``1`` is not user ``1``'s); rows without one are searched by token in ``columns``.
    """
    wanted = F.broadcast(hashes.select(ID_HASH).distinct())
    found = []
    rows = df
    if owner is not None:
        owned = F.coalesce(owner.rlike(ID_JAVA_REGEX), F.lit(False))
        found.append(df.where(owned).select(*[F.col(f"`{k}`") for k in keys],
                                            salted_hash(owner, salt).alias(ID_HASH)))
        rows = df.where(~owned)
    if columns and lengths:
        text = F.concat_ws(" ", *[as_text(rows, c) for c in columns])
        found.append(rows.select(*[F.col(f"`{k}`") for k in keys],
                                 F.explode(F.array_distinct(tokens(text, lengths))).alias("_token"))
                     .select(*keys, salted_hash(F.col("_token"), salt).alias(ID_HASH)))
    if not found:
        return df.select(*keys, F.lit(None).cast("string").alias(ID_HASH)).limit(0)
    union = found[0]
    for more in found[1:]:
        union = union.unionByName(more)
    return union.join(wanted, ID_HASH).select(*keys, ID_HASH).distinct()


# --- Python twin ---------------------------------------------------------------------------------------------

class Matcher:
    """Finds ids inside bytes or strings by the rule above; labels say which id (never the id itself).

    ``needles`` maps an id to its label: plain ids (and prefixes) when a drop is given, or salted hashes with
    ``salt`` set when only ``ops/deletions`` is known (each token of a sought length is then hashed first).
    """

    def __init__(self, needles: Mapping[str, str], lengths: Iterable[int], salt: str | None = None):
        self.needles = {k.encode("utf-8") if salt is None else k: v for k, v in needles.items()}
        self.lengths = frozenset(n for n in lengths if n > 0)
        self.salt = None if salt is None else salt.encode("utf-8")
        self._tokens = None
        if self.lengths:
            run = f"[{ID_CHARS}]".encode()
            self._tokens = re.compile(rb"(?<!%s)%s{%d,%d}(?!%s)" % (run, run, min(self.lengths), max(self.lengths),
                                                                   run))

    def __bool__(self) -> bool:
        return bool(self.needles and self.lengths)

    def _lookup(self, token: bytes) -> str | None:
        if self.salt is None:
            return self.needles.get(token)
        return self.needles.get(hashlib.sha256(self.salt + token).hexdigest())

    def tokens(self, data: bytes | str) -> Iterator[bytes]:
        """The tokens of ``data`` of a sought length (after JSON escapes are undone)."""
        if self._tokens is None:
            return
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        for match in self._tokens.finditer(unescape_bytes(raw)):
            token = match.group()
            if len(token) in self.lengths:
                yield token

    def find(self, data: bytes | str) -> set[str]:
        """Labels of every needle occurring in ``data`` as a whole token."""
        if not self:
            return set()
        out = set()
        for token in set(self.tokens(data)):
            label = self._lookup(token)
            if label is not None:
                out.add(label)
        return out

