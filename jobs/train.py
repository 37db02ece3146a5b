"""spark-submit jobs/train.py --warehouse DIR --model NAME --run-id RUN [--params JSON]: one candidate."""

import argparse
import json

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--model", required=True, help="spark_als | implicit_als | popularity | content")
    p.add_argument("--run-id", required=True)
    p.add_argument("--params", help="JSON hyper-parameters overriding conf train.params")
    return p


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.spark import get_spark
    from recsys.train import train

    settings = load_settings(warehouse=args.warehouse)
    train(get_spark(settings.spark), settings, args.model, args.run_id, json.loads(args.params) if args.params else None)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
