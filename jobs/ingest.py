"""spark-submit jobs/ingest.py …: ``recsys ingest`` as a Spark job — raw dump → bronze + quarantine (the DAG passes
``--bronze-only``; silver is its own step). Flags: ``recsys ingest --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("ingest")
