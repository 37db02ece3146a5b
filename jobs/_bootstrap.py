"""Shared start-up of every ``spark-submit jobs/<step>.py`` entry point: make ``recsys`` importable
from a checkout (spark-submit does not install the package) and parse the common flags."""

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


def run(step_main) -> None:
    """Run a job's main with the CLI's error contract: one-line reason, non-zero exit."""
    from recsys.logs import setup_logging

    setup_logging()
    try:
        code = step_main()
    except Exception as exc:  # noqa: BLE001
        print(f"{Path(sys.argv[0]).name}: error: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
              file=sys.stderr)
        code = 2
    sys.exit(code or 0)
