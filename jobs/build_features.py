"""spark-submit jobs/build_features.py --warehouse DIR: silver → gold (vocabularies, confidence, splits)."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    return _bootstrap.parser(__doc__)


def main() -> int:
    args = build_parser().parse_args()

    from recsys.config import load_settings
    from recsys.features import build_features
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    build_features(get_spark(settings.spark), settings.warehouse, settings.features)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
