"""spark-submit jobs/validate.py …: ``recsys validate`` as a Spark job — the Great Expectations gate of one layer (exit
1 when an error-severity expectation fails). Flags: ``recsys validate --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("validate")
