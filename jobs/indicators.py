"""spark-submit jobs/indicators.py …: ``recsys indicators`` as a Spark job — fold the API's event logs into ops/events,
then the daily indicators per version and A/B variant. Flags: ``recsys indicators --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("indicators")
