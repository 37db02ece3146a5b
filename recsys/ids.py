"""What an id is, and how an erased one is kept: one rule for ingest, drops, the API and the audit.

User ids, asins, categories, request ids and variants are 1–64 characters of ``[A-Za-z0-9_-]``. The rule is
applied with ``fullmatch`` only: ``re``'s ``$`` also matches before a trailing newline, so ``"U1\\n"`` would pass a
``^…$`` pattern and then be stored, served and hashed as a different id than ``"U1"``.
"""

from __future__ import annotations

import hashlib
import re

ID_CHARS = r"A-Za-z0-9_\-"
ID_MAX_LENGTH = 64
ID_RE = re.compile(rf"[{ID_CHARS}]{{1,{ID_MAX_LENGTH}}}")
# The same rule for Spark's ``rlike`` (Java regex; ``\z`` is the true end of input, unlike ``$``).
ID_JAVA_REGEX = rf"\A[{ID_CHARS}]{{1,{ID_MAX_LENGTH}}}\z"


def is_valid_id(value: object) -> bool:
    """True for a string that is exactly one id (no surrounding whitespace, no trailing newline)."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def id_hash(salt: str, value: str) -> str:
    """Hex sha256 of ``salt + value`` (both UTF-8): the only form in which an erased user id is kept."""
    return hashlib.sha256((salt + value).encode("utf-8")).hexdigest()
