"""spark-submit jobs/ab_report.py --warehouse DIR [--reports DIR]: fold pending API events, then write the A/B
readout of conf ``monitor.ab`` (two-proportion tests, intervals, sample-ratio check) to reports/ab-<experiment>/;
a no-op that says so when no experiment is enabled."""

import argparse
from pathlib import Path

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--reports", type=Path, help="reports folder (default from conf)")
    return p


def main() -> int:
    args = build_parser().parse_args()

    import json

    from recsys.config import load_settings
    from recsys.monitor.report import run_ab_report
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse, reports=args.reports)
    print(json.dumps(run_ab_report(get_spark(settings.spark), settings), indent=2, default=str))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
