"""Synthetic traffic against the API: users whose behaviour follows the clusters planted by :mod:`recsys.synth`.

Why: online indicators need clicks, and a planted truth makes them meaningful — a user clicks a shown item with
``p_click_own`` when it belongs to their own cluster and ``p_click_other`` otherwise, so a model that recovered the
clusters earns a measurably higher CTR than one that did not, through the real API, event log and jobs.

One session (cascade browsing): ask for the user's recommendations, log the impression, scan the list top-down
(leaving at each position with ``p_abandon``); on a click, maybe add to cart and purchase, then with ``p_next``
open the clicked item's similar list (a rec → rec impression) and scan that too; a list scanned to its end with no
click logs a ``scroll_end``. The session's events are posted in one batch when it ends, as a client SDK flushes.
Event times are the API's clock (it stamps every event it takes: a client never chooses them), so what a run
reproduces for a seed is its events, not their times.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recsys.constants import ITEM_ID, USER_ID
from recsys.synth import load_truth


class Client(Protocol):
    def get(self, path: str) -> tuple[int, dict]: ...
    def post(self, path: str, body: Any) -> tuple[int, dict]: ...


class FlaskClient:
    """The app in-process (``app.test_client()``): the whole request path without sockets."""

    def __init__(self, app):
        self._client = app.test_client()

    def get(self, path: str) -> tuple[int, dict]:
        response = self._client.get(path)
        return response.status_code, response.get_json(silent=True) or {}

    def post(self, path: str, body: Any) -> tuple[int, dict]:
        response = self._client.post(path, json=body)
        return response.status_code, response.get_json(silent=True) or {}


class HttpClient:
    """A running API (``recsys serve``), e.g. ``http://127.0.0.1:8000``."""

    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _send(self, request: urllib.request.Request) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        return self._send(urllib.request.Request(self.base_url + path))

    def post(self, path: str, body: Any) -> tuple[int, dict]:
        return self._send(urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"}, method="POST"))


@dataclass(frozen=True)
class Behaviour:
    """How simulated users act; defaults give a CTR of roughly 0.4-0.6 on good lists, < 0.2 on random ones."""

    p_click_own: float = 0.3        # per examined item of the user's own cluster
    p_click_other: float = 0.02     # per examined item of another cluster
    p_abandon: float = 0.1          # leave the list at each position
    p_cart: float = 0.5             # after a click
    p_purchase: float = 0.5         # after add-to-cart
    p_next: float = 0.5             # after a click: open the clicked item's similar list
    k: int = 10


class Simulator:
    """Drives ``client`` with users drawn from the planted truth of a synthetic dump."""

    def __init__(self, client: Client, truth_dir: Path | str, behaviour: Behaviour | None = None, seed: int = 0):
        self.client = client
        self.users, items = load_truth(Path(truth_dir))
        self.item_cluster = {asin: cluster for asin, (cluster, _) in items.items()}
        self.behaviour = behaviour or Behaviour()
        self.rng = np.random.default_rng(seed)
        self.counts: Counter[str] = Counter()

    def _scan(self, shown: list[str], cluster: int, request_id: str, user: str, events: list[dict],
              depth: int) -> None:
        b = self.behaviour

        def emit(kind: str, **fields: Any) -> None:
            events.append({"event_type": kind, USER_ID: user, "request_id": request_id, **fields})

        emit("impression", items=shown)
        for position, asin in enumerate(shown):
            if position and self.rng.random() < b.p_abandon:
                return
            p = b.p_click_own if self.item_cluster.get(asin) == cluster else b.p_click_other
            if self.rng.random() >= p:
                continue
            emit("click", **{ITEM_ID: asin})
            if self.rng.random() < b.p_cart:
                emit("add_to_cart", **{ITEM_ID: asin})
                if self.rng.random() < b.p_purchase:
                    emit("purchase", **{ITEM_ID: asin})
            if depth == 0 and self.rng.random() < b.p_next:
                status, body = self.client.get(f"/v1/items/{asin}/similar?k={b.k}")
                self.counts[f"similar_{status}"] += 1
                if status == 200 and body.get("items"):
                    self._scan([i[ITEM_ID] for i in body["items"]], cluster, body["request_id"], user, events,
                               depth + 1)
            return
        emit("scroll_end")

    def session(self, user: str) -> None:
        """One session of ``user``."""
        status, body = self.client.get(f"/v1/users/{user}/recommendations?k={self.behaviour.k}")
        self.counts[f"recommendations_{status}"] += 1
        if status != 200 or not body.get("items"):
            return
        events: list[dict] = []
        self._scan([i[ITEM_ID] for i in body["items"]], self.users[user], body["request_id"], user, events,
                   0)
        status, answer = self.client.post("/v1/events", events)
        self.counts[f"events_{status}"] += 1
        if status == 202:
            self.counts.update(e["event_type"] for e in events)
            self.counts["accepted"] += answer["accepted"]

    def run(self, users: int, sessions: int = 1, user_ids: list[str] | None = None) -> dict:
        """``sessions`` sessions for each of ``users`` users (drawn without replacement from ``user_ids`` or the
        truth file); returns request and event counts."""
        pool = sorted(user_ids if user_ids is not None else self.users)
        chosen = [pool[i] for i in self.rng.choice(len(pool), size=min(users, len(pool)), replace=False)]
        for s in range(sessions):
            for user in chosen:
                self.session(user)
        return {"users": len(chosen), "sessions": len(chosen) * sessions, "behaviour": asdict(self.behaviour),
                "counts": dict(sorted(self.counts.items()))}
