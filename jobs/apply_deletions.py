"""spark-submit jobs/apply_deletions.py --warehouse DIR (--drops DIR | --items FILE | --users FILE)
[--purge-history | --no-purge-history]: item deletions and user erasures, cascaded through every table."""

import argparse
import json
from pathlib import Path

import _bootstrap


def build_parser() -> argparse.ArgumentParser:
    p = _bootstrap.parser(__doc__)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--drops", type=Path, help="folder of drop files (default from conf deletions.drops_dir)")
    source.add_argument("--items", type=Path, help="item deletion drop (parent_asin,reason,requested_at)")
    source.add_argument("--users", type=Path, help="user erasure drop (user_id,reason,requested_at)")
    p.add_argument("--purge-history", action=argparse.BooleanOptionalAction, default=None,
                   help="rewrite tables that lost erased users into fresh directories now "
                        "(default from conf deletions.purge_history: on)")
    return p


def main() -> int:
    p = build_parser()
    args = p.parse_args()

    from recsys.catalog import apply_drops, read_drops
    from recsys.catalog.apply import deletion_settings
    from recsys.config import load_settings
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    folder = args.drops or (None if args.items or args.users else deletion_settings(settings).drops_dir)
    if not (folder or args.items or args.users):
        p.error("give --drops, --items or --users (or set deletions.drops_dir in the config)")
    drops = read_drops(items=args.items, users=args.users, drops=folder)   # bad input fails before Spark
    report = apply_drops(get_spark(settings.spark), settings, drops, purge_history=args.purge_history)
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
