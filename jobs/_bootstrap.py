"""Shared start-up of every ``spark-submit jobs/<script>`` entry point: make ``recsys`` importable from a checkout
(spark-submit does not install the package), then run the ``recsys`` command the script stands for, with its
flags, its writer lock (``recsys.lock``) and its error contract (one-line reason, non-zero exit)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(command: str) -> None:
    """``recsys <command> <this script's arguments>``; exits with its code."""
    from recsys.cli import main

    sys.exit(main([command, *sys.argv[1:]]))
