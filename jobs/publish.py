"""spark-submit jobs/publish.py --warehouse DIR [--version V]: top-K tables of the production model, switched
current only after the published quality gate passes (``--no-switch`` / ``--switch`` split the two for the DAG)."""

import argparse

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--version", help="version label (default: a new timestamp); rerun with the same to retry")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-switch", action="store_true", help="write the version's rows only (validate, then --switch)")
    mode.add_argument("--switch", action="store_true", help="only make an already written --version current")
    p.add_argument("--no-gate", action="store_true", help="write and switch without the published quality gate")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="refit the production model on every split first (default from conf publish.refit_on_all; "
                        "the deletions DAG republishes with --no-refit)")
    return p


def main() -> int:
    p = build_parser()
    args = p.parse_args()
    if args.switch and not args.version:
        p.error("--switch needs --version")

    from recsys.config import load_settings
    from recsys.publish import publish
    from recsys.quality import published_gate
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    spark = get_spark(settings.spark)
    both = not (args.switch or args.no_switch or args.no_gate)   # the DAG runs the gate as a task in between
    publish(spark, settings, version=args.version, write=not args.switch, switch=not args.no_switch,
            gate=published_gate(spark, settings) if both else None, refit=args.refit)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
