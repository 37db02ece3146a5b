"""spark-submit jobs/apply_deletions.py …: ``recsys apply-deletions`` as a Spark job — item deletions and user
erasures, cascaded through every table, file and the API. Flags: ``recsys apply-deletions --help`` (the same
parser)."""

import _bootstrap

if __name__ == "__main__":
    _bootstrap.run("apply-deletions")
