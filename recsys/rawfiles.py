"""Find the raw dump files and check each one before Spark touches it.

Spark reads gzip through the JVM's ``GZIPInputStream``, which on a truncated file raises only after
handing back fewer complete lines than the stream held — salvaging that way silently loses rows.
So every file is first streamed once in Python: size, sha256, line count, and full decompression.
A file that fails (truncated, corrupt, unreadable) is recorded as failed and none of it is ingested;
the line count is later reconciled against what Spark parsed.

The same pass parses every line with a strict JSON parser (orjson), because Spark's reader is lenient: it takes
single quotes, ``NaN``, and ignores what follows the first value (``{…}{…}`` silently loses the second row).
A line must be exactly one JSON object whose typed fields have their JSON types (:data:`TYPE_RULES`); the line
numbers that are not, with their reason, go to Spark (:attr:`FileCheck.refused`), which quarantines them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from recsys import constants as C

_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
_CHUNK = 1 << 22

UNPARSEABLE_JSON = "unparseable_json"
NOT_A_JSON_OBJECT = "not_a_json_object"
_BOM = "\ufeff".encode()
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

class TypeRules:
    """The JSON types (exact Python types of orjson's values: a bool is not an int) each field may have when present;
    null is always allowed here (a null id or required field is judged by Spark: missing). ``bigint`` fields must
    also fit Spark's BIGINT. Checked per line, so the verdict of each combination of types is remembered."""

    def __init__(self, types: dict[str, tuple[type, ...]], bigint: frozenset[str] = frozenset()) -> None:
        self.names = tuple(types)
        self.types = {name: (*allowed, type(None)) for name, allowed in types.items()}
        self._bigint = tuple(i for i, name in enumerate(self.names) if name in bigint)
        self._good: set[tuple[type, ...]] = set()

    def wrong_type(self, row: dict) -> str | None:
        """``wrong_type:<field>`` of the first field (in :attr:`names` order) of the wrong type, else None."""
        values = tuple(map(row.get, self.names))
        signature = tuple(map(type, values))
        if signature not in self._good:
            wrong = next((n for n, t in zip(self.names, signature) if t not in self.types[n]), None)
            if wrong is not None:
                return f"wrong_type:{wrong}"
            self._good.add(signature)
        for i in self._bigint:
            if values[i] is not None and not _INT64_MIN <= values[i] <= _INT64_MAX:
                return f"wrong_type:{self.names[i]}"
        return None


# Per file kind. Ids are strings or JSON numbers (kept as their text); reviews are typed; meta rows stay lenient
# except for their id.
_ID = (str, int, float)
TYPE_RULES: dict[str, TypeRules] = {
    C.KIND_REVIEWS: TypeRules({
        "rating": (int, float), "title": (str,), "text": (str,), "images": (list,), "asin": _ID, "parent_asin": _ID,
        "user_id": _ID, "timestamp": (int,), "helpful_vote": (int,), "verified_purchase": (bool,),
    }, bigint=frozenset({"timestamp", "helpful_vote"})),
    C.KIND_ITEMS: TypeRules({"parent_asin": _ID}),
}


def normalized_line(line: bytes) -> bytes:
    """The line as Spark's ``read_lines`` sees it: one trailing CR (CRLF files) and a leading UTF-8 BOM removed."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[len(_BOM):] if line.startswith(_BOM) else line


def strict_reason(line: bytes, kind: str) -> str | None:
    """Why a raw line is refused: not exactly one JSON object (``unparseable_json``, ``not_a_json_object``) or a
    field of the wrong JSON type (``wrong_type:<field>``, :data:`TYPE_RULES`); None for a good or a blank line
    (spaces only, as Spark's ``trim``). orjson is strict: no NaN/Infinity, no single quotes, nothing after the
    value, valid UTF-8, no lone surrogate escape."""
    try:
        value = orjson.loads(line)      # the usual case, CRLF included (a CR is JSON whitespace): no copy made
    except orjson.JSONDecodeError:
        line = normalized_line(line)
        if not line.strip(b" "):
            return None
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            return UNPARSEABLE_JSON
    if type(value) is not dict:
        return NOT_A_JSON_OBJECT
    return TYPE_RULES[kind].wrong_type(value)


@dataclass(frozen=True)
class RawFile:
    """One file of the dump: ``rel`` is its path below the source root (the lineage key)."""

    path: Path
    rel: str
    kind: str        # C.KIND_REVIEWS or C.KIND_ITEMS
    category: str

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")


@dataclass
class RefusedLines:
    """Lines of one file the strict parse refused: 1-based line numbers and their reasons, compact (a file of
    millions of bad lines costs ~16 bytes a line)."""

    lines: array = field(default_factory=lambda: array("q"))
    reasons: list[str] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.lines.append(line)
        self.reasons.append(reason)

    def __len__(self) -> int:
        return len(self.lines)

    def items(self) -> list[tuple[int, str]]:
        return list(zip(self.lines, self.reasons))


class _LineScanner:
    """Counts the ``"\n"``-separated lines of a decompressed stream and judges each with :func:`strict_reason`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lines = 0
        self.refused = RefusedLines()
        self._partial = b""

    def feed(self, data: bytes) -> None:
        pieces = (self._partial + data).split(b"\n")
        self._partial = pieces.pop()
        for piece in pieces:
            self._judge(piece)

    def finish(self) -> None:
        """A last line without ``"\n"`` counts (Spark reads it too)."""
        if self._partial:
            self._judge(self._partial)
            self._partial = b""

    def _judge(self, piece: bytes) -> None:
        self.lines += 1
        reason = strict_reason(piece, self.kind)
        if reason is not None:
            self.refused.add(self.lines, reason)


@dataclass(frozen=True)
class FileCheck:
    file: RawFile
    size: int
    mtime_ns: int
    sha256: str | None = None
    lines: int | None = None     # number of "\n"-separated lines (a last line without "\n" counts)
    error: str | None = None
    refused: RefusedLines | None = None   # non-blank lines that are not exactly one well-typed JSON object

    @property
    def ok(self) -> bool:
        return self.error is None


def classify(path: Path, root: Path) -> RawFile | None:
    """``<Category>.jsonl[.gz]`` → reviews, ``meta_<Category>.jsonl[.gz]`` → items; anything else None."""
    name = path.name
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    kind = C.KIND_ITEMS if stem.startswith(C.META_PREFIX) else C.KIND_REVIEWS
    category = stem[len(C.META_PREFIX):] if kind == C.KIND_ITEMS else stem
    if not category:
        return None
    return RawFile(path=path.resolve(), rel=path.relative_to(root).as_posix(), kind=kind, category=category)


def discover(source: Path) -> list[RawFile]:
    """Every raw file below ``source`` (any depth; folders starting with ``_`` or ``.`` are skipped)."""
    if not source.is_dir():
        raise FileNotFoundError(f"source folder not found: {source}")
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        for name in sorted(filenames):
            raw = classify(Path(dirpath) / name, source)
            if raw is not None:
                found.append(raw)
    return found


def stat(file: RawFile) -> FileCheck:
    st = file.path.stat()
    return FileCheck(file=file, size=st.st_size, mtime_ns=st.st_mtime_ns)


def inspect(file: RawFile) -> FileCheck:
    """Checksum the bytes, decompress fully, count lines and parse each strictly; any failure becomes ``error``."""
    base = stat(file)
    digest = hashlib.sha256()
    stream = _Gunzip() if file.gzipped else None
    scanner = _LineScanner(file.kind)
    try:
        with open(file.path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                data = stream.feed(chunk) if stream is not None else chunk
                if data:
                    scanner.feed(data)
        if stream is not None:
            stream.finish()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return FileCheck(file=file, size=base.size, mtime_ns=base.mtime_ns, sha256=digest.hexdigest(),
                         error=f"{type(exc).__name__}: {exc}")
    scanner.finish()
    return FileCheck(file=file, size=base.size, mtime_ns=base.mtime_ns, sha256=digest.hexdigest(),
                     lines=scanner.lines, refused=scanner.refused)


class _Gunzip:
    """Incremental gunzip that follows concatenated members, as the format (and Hadoop) allow."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._started = False

    def feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            self._started = True
            out.append(self._member.decompress(chunk))
            chunk = self._member.unused_data if self._member.eof else b""
            if self._member.eof and chunk:
                self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return b"".join(out)

    def finish(self) -> None:
        if self._started and not self._member.eof:
            raise EOFError("gzip stream truncated (no end-of-stream marker)")


def inspect_all(files: list[RawFile], threads: int = 2) -> list[FileCheck]:
    """Inspect files in parallel (zlib and hashlib release the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(inspect, files))
