"""spark-submit jobs/indicators.py --warehouse DIR: fold the API's event logs into ops/events, then recompute the
daily indicators per model version and A/B variant in ops/indicators."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    return _bootstrap.parser(__doc__)


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.monitor.indicators import run_indicators
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    run_indicators(get_spark(settings.spark), settings)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
