"""spark-submit jobs/publish.py …: ``recsys publish`` as a Spark job — top-K tables of the production model as a
version; ``--no-switch`` / ``--switch`` split write and switch around a gate. Flags: ``recsys publish --help`` (the
same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("publish")
