"""spark-submit jobs/build_silver.py …: ``recsys build-silver`` as a Spark job — bronze → silver (MERGE). Flags:
``recsys build-silver --help`` (the same parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("build-silver")
