"""spark-submit jobs/evaluate.py --warehouse DIR --run-id RUN: metrics of every candidate, promotion, report."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--run-id", required=True)
    return p


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.evaluate.runner import evaluate_run
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    evaluate_run(get_spark(settings.spark), settings, args.run_id)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
