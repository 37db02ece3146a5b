"""Signed request ids: the API signs each list it serves, so an event can prove it is about a list the API showed.

A ``request_id`` is 55 lowercase hex characters: the issue time (11, epoch milliseconds), a random nonce (12) and a
tag (32) = the first 128 bits of HMAC-SHA256(key, "<issued>.<nonce>.<user_id>.<item,item,...>"), the items in rank
order and ``user_id`` empty for a list served to no user (``/v1/popular``, ``/similar``). It stays a valid id
(``recsys.ids``), so a front end keeps echoing it unchanged.

Keys (``serve.signing_keys``): the first signs, all verify, so a key is rotated without downtime by prepending the
new one, waiting for the acceptance window, then dropping the old one.

The first key also keys :meth:`Signer.pseudonym`, the digest under which the ledger keeps a user's recent items (a
message no request id's tag is computed over: those start with the issue time's hex digits). A rotation therefore
starts every user's recent session afresh — an hour of blending at most, the session window.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

ISSUED_HEX = 11
NONCE_HEX = 12
TAG_HEX = 32
REQUEST_ID = re.compile(rf"[0-9a-f]{{{ISSUED_HEX + NONCE_HEX + TAG_HEX}}}")


@dataclass(frozen=True)
class Issued:
    """What a request id says about itself: when it was issued (epoch ms), its nonce and its tag."""

    issued_ms: int
    nonce: str
    tag: str


def parse(request_id: str) -> Issued | None:
    """The parts of a request id in the signed format; None for anything else."""
    if not REQUEST_ID.fullmatch(request_id):
        return None
    return Issued(int(request_id[:ISSUED_HEX], 16), request_id[ISSUED_HEX:ISSUED_HEX + NONCE_HEX],
                  request_id[ISSUED_HEX + NONCE_HEX:])


class Signer:
    """Signs with the first key, verifies with any; holds the keys' prepared HMAC states (copying one is cheaper
    than keying a new HMAC on every lookup)."""

    def __init__(self, keys: Sequence[str]):
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._macs = [hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256) for key in keys]

    def _tag(self, mac: hmac.HMAC, issued_ms: int, nonce: str, user_id: str, items: Sequence[str]) -> str:
        mac = mac.copy()
        mac.update(f"{issued_ms:0{ISSUED_HEX}x}.{nonce}.{user_id}.{','.join(items)}".encode("utf-8"))
        return mac.hexdigest()[:TAG_HEX]

    def sign(self, issued_ms: int, user_id: str, items: Sequence[str]) -> str:
        """A new request id for the list ``items`` (rank order) served at ``issued_ms`` to ``user_id`` ("" if none)."""
        nonce = secrets.token_hex(NONCE_HEX // 2)
        return f"{issued_ms:0{ISSUED_HEX}x}{nonce}{self._tag(self._macs[0], issued_ms, nonce, user_id, items)}"

    def pseudonym(self, user_id: str) -> str:
        """A keyed digest of ``user_id`` (first key, 128 bits hex): who a row of the ledger's ``recent`` is about,
        stable across workers and restarts that share the keys, meaningless without them."""
        mac = self._macs[0].copy()
        mac.update(f"recent\0{user_id}".encode("utf-8"))
        return mac.hexdigest()[:TAG_HEX]

    def verify(self, issued: Issued, user_id: str, items: Sequence[str]) -> bool:
        """Was the list ``items`` served under this request id to ``user_id`` ("" = to no user), by any key?"""
        return any(hmac.compare_digest(self._tag(mac, issued.issued_ms, issued.nonce, user_id, items), issued.tag)
                   for mac in self._macs)
