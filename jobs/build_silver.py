"""spark-submit jobs/build_silver.py --warehouse DIR [--force]: bronze → silver (MERGE, idempotent)."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--force", action="store_true", help="rebuild even if bronze is unchanged")
    return p


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.silver import build_silver
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    build_silver(get_spark(settings.spark), settings.warehouse, force=args.force)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
