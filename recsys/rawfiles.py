"""Find the raw dump files and check each one before Spark touches it.

Spark reads gzip through the JVM's ``GZIPInputStream``, which on a truncated file raises only after
handing back fewer complete lines than the stream held — salvaging that way silently loses rows.
So every file is first streamed once in Python: size, sha256, line count, and full decompression.
A file that fails (truncated, corrupt, unreadable) is recorded as failed and none of it is ingested;
the line count is later reconciled against what Spark parsed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from recsys import constants as C

_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
_CHUNK = 1 << 22


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


@dataclass(frozen=True)
class FileCheck:
    file: RawFile
    size: int
    mtime_ns: int
    sha256: str | None = None
    lines: int | None = None     # number of "\n"-separated lines (a last line without "\n" counts)
    error: str | None = None

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
    """Checksum the bytes, decompress fully and count lines; any failure becomes ``error``."""
    base = stat(file)
    digest = hashlib.sha256()
    stream = _Gunzip() if file.gzipped else None
    lines = 0
    last = b"\n"
    try:
        with open(file.path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                data = stream.feed(chunk) if stream is not None else chunk
                if data:
                    lines += data.count(b"\n")
                    last = data[-1:]
        if stream is not None:
            stream.finish()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return FileCheck(file=file, size=base.size, mtime_ns=base.mtime_ns, sha256=digest.hexdigest(),
                         error=f"{type(exc).__name__}: {exc}")
    if last != b"\n":
        lines += 1
    return FileCheck(file=file, size=base.size, mtime_ns=base.mtime_ns, sha256=digest.hexdigest(), lines=lines)


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
