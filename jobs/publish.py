"""spark-submit jobs/publish.py --warehouse DIR [--version V]: top-K tables of the production model."""

import _bootstrap


def main() -> int:
    p = _bootstrap.parser(__doc__)
    p.add_argument("--version", help="version label (default: a new timestamp); rerun with the same to retry")
    args = p.parse_args()

    from recsys.config import load_settings
    from recsys.publish import publish
    from recsys.spark import get_spark

    settings = load_settings(warehouse=args.warehouse)
    publish(get_spark(settings.spark), settings, version=args.version)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
