"""Shared start-up of every ``spark-submit jobs/<step>.py`` entry point: make ``recsys`` importable
from a checkout (spark-submit does not install the package), parse the common flags, and hold the warehouse's
writer lock (``recsys.lock``) for the job's whole run: every job writes the warehouse."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--warehouse", type=Path, help="warehouse root (default from conf)")
    return p


CREATES_WAREHOUSE = {"ingest.py"}    # the first job of a warehouse; every other job needs it to exist


def _warehouse_arg(argv: list[str]) -> Path | None:
    known, _ = parser("").parse_known_args(argv)
    return known.warehouse


def run(step_main) -> None:
    """Run a job's main under the warehouse's writer lock, with the CLI's error contract: one-line reason,
    non-zero exit. ``--help`` is answered without asking for the lock."""
    from contextlib import nullcontext

    from recsys.logs import setup_logging

    setup_logging()
    script = Path(sys.argv[0]).name
    try:
        if {"-h", "--help"} & set(sys.argv[1:]):
            held = nullcontext()
        else:
            from recsys.config import load_settings
            from recsys.lock import warehouse_writer

            settings = load_settings(warehouse=_warehouse_arg(sys.argv[1:]))
            held = warehouse_writer(settings, f"jobs/{script}", create=script in CREATES_WAREHOUSE)
        with held:
            code = step_main()
    except Exception as exc:  # noqa: BLE001
        print(f"{Path(sys.argv[0]).name}: error: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
              file=sys.stderr)
        code = 2
    sys.exit(code or 0)
