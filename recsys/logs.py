"""One structured log line per step: name, seconds, row counts (what an operator greps for)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("recsys")


def setup_logging(level: str = "INFO") -> None:
    """Plain ``key=value`` friendly format on stderr; idempotent."""
    root = logging.getLogger()
    if not any(getattr(h, "_recsys", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._recsys = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "great_expectations", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def step(name: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time a step and log ``{"step": name, "seconds": …, **fields}`` as one JSON line when it ends.

    The body may add fields (row counts, versions) to the yielded dict; a failure is logged with
    ``"status": "failed"`` and re-raised.
    """
    record: dict[str, Any] = {"step": name, **fields}
    start = time.perf_counter()
    try:
        yield record
    except BaseException as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    else:
        record.setdefault("status", "ok")
    finally:
        record["seconds"] = round(time.perf_counter() - start, 3)
        log.info("step %s", json.dumps(record, default=str, sort_keys=False))


@contextmanager
def timed(out: dict[str, float], key: str, digits: int = 3) -> Iterator[None]:
    """Store the seconds the body took in ``out[key]`` (sub-step timings inside a :func:`step`, benchmarks)."""
    start = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - start, digits)
