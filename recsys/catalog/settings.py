"""Settings of item deletions and user erasures (the ``deletions`` section of ``recsys.config.Settings``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from recsys.strict import StrictModel


class DeletionSettings(StrictModel):
    """Where drops come from and how soon erased users must also leave table history."""

    drops_dir: Path | None = None            # folder of drop files (CSV/JSONL) the DAG applies; keep it outside
                                             # the warehouse: the files name users in plain text
    purge_history: bool = True               # rewrite tables that lost erased users' rows into fresh directories
                                             # right away (no time travel before the erasure)
    purge_window_hours: float = Field(24.0, ge=0)  # VACUUM keeps unreferenced files this long (readers of older
                                                   # versions keep working); with purge_history off, also the
                                                   # longest an erasure may stay in table history: the first
                                                   # deletion run after it purges
    rewrite_file_share: float = Field(0.3, ge=0, le=1)  # a list table of which a MERGE would rewrite more than
                                                        # this share of the files is rewritten whole instead (a
                                                        # MERGE costs ~2.7x a plain rewrite per file it touches)
    pending_warn_hours: float = Field(24.0, ge=0)  # warn (each deletion run) about a request still pending this
                                                   # long after it was requested: denied, but not yet erased
