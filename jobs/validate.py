"""spark-submit jobs/validate.py --warehouse DIR --layer bronze|silver|gold|published [--version V] [--run-id R]:
the Great Expectations gate of one layer. Exits non-zero, naming the failed expectations and sample rows, when
an error-severity expectation fails; the JSON summary goes to stdout either way."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--layer", required=True, choices=("bronze", "silver", "gold", "published"))
    p.add_argument("--version", help="published layer: the version to validate (default: the current one)")
    p.add_argument("--run-id", help="stored with the results (default: a new quality-<layer>-… id)")
    p.add_argument("--table", action="append", help="validate only this table of the layer (repeatable)")
    return p


def main() -> int:
    args = build_parser().parse_args()

    import json

    from recsys.config import load_settings
    from recsys.quality import validate_layer
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    result = validate_layer(get_spark(settings.spark), settings.warehouse, args.layer, settings, args.run_id,
                            version=args.version, tables=args.table)
    print(json.dumps(result.to_dict(), default=str))
    result.raise_if_failed()
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
