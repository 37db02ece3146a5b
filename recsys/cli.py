"""``recsys`` command line: one subcommand per step (:mod:`recsys.commands`), run in this process under the
warehouse's writer lock when it writes, its result printed as JSON.

Exit codes: 0 done; 1 the command ran and its verdict is "no" (the result is still printed); 2 bad input or an
error, with a one-line reason (tracebacks only with ``RECSYS_DEBUG=1``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from recsys import pipeline  # noqa: F401  (registers the pipeline and retrain commands)
from recsys.commands import CommandFailed, build_parser, run, writer
from recsys.config import Settings, load_settings
from recsys.logs import setup_logging


def _run(name: str, args: argparse.Namespace, settings: Settings) -> Any:
    creates = writer(name)
    if creates is None:
        return run(name, args, settings)
    from recsys.lock import warehouse_writer

    with warehouse_writer(settings, f"recsys {name}", create=creates):
        return run(name, args, settings)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(os.environ.get("RECSYS_LOG_LEVEL", "INFO"))
    try:
        settings = load_settings(warehouse=getattr(args, "warehouse", None), source=getattr(args, "source", None))
        result = _run(args.command, args, settings)
        if result is not None:
            _print_json(result)
        return 0
    except CommandFailed as failed:
        if failed.result is not None:
            _print_json(failed.result)
        print(f"recsys {args.command}: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is a one-line reason, not a traceback
        if os.environ.get("RECSYS_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"recsys {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
