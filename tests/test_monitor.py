"""Monitoring end to end on real Spark, Delta, Flask and gunicorn: events land durably and fold into
``ops/events`` exactly once, indicators match hand-computed values, A/B assignment is stable and balanced, the
planted-cluster simulator tells a trained model from a random one through the API, and the promotion gate refuses a
worse model and promotes a better one on the newest split.

Statistical assertions state their bound next to them; expected indicator values are computed by hand from the
events written in the test, not by the code under test.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from netutil import free_port
from recsys import constants as C
from recsys import ops
from recsys import tables as T
from recsys.monitor import ab as AB
from recsys.monitor.events_compaction import closed_files, compact_events
from recsys.monitor.indicators import compute_indicators
from recsys.serve.experiment import ABSettings, VariantSettings, assign
from recsys.serve.signing import Signer

NOW = datetime.now(timezone.utc)
SIGNING_KEY = "monitor-test-key-0123456789"


def _line(event_id: str, kind: str, user: str, request: str, ts: datetime, *, item: str | None = None,
          items: list[str] | None = None, variant: str | None = None, version: str = "v1") -> str:
    """One log line in the file contract of recsys.serve.events."""
    stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"event_id": event_id, "event_type": kind, "user_id": user, "parent_asin": item,
                       "request_id": request, "items": items, "variant": variant, "ts": stamp,
                       "received_at": stamp, "version": version, "model": "m"}) + "\n"


def _event_ids(spark, warehouse: Path) -> list[str]:
    return [r[0] for r in spark.read.format("delta").load(T.table_path(warehouse, C.EVENTS))
            .select("event_id").collect()]


# --- compaction ------------------------------------------------------------------------------------------------


def test_compaction_merges_once_skips_torn_lines_and_deletes_only_closed_files(spark, tmp_path):
    events, warehouse = tmp_path / "events", tmp_path / "wh"
    events.mkdir()
    yesterday = (NOW - timedelta(days=1)).strftime("%Y%m%d")
    today = NOW.strftime("%Y%m%d")
    closed = events / f"events-{yesterday}-host-1.jsonl"
    closed.write_text("".join(_line(f"a{i}", "click", "u1", "r1", NOW - timedelta(days=1), item="I1")
                              for i in range(3)))
    old = time.time() - 3600
    os.utime(closed, (old, old))
    open_file = events / f"events-{today}-host-2.jsonl"
    full = _line("b1", "impression", "u2", "r2", NOW, items=["I1", "I2"])
    torn = _line("b2", "click", "u2", "r2", NOW, item="I1")
    open_file.write_text(full + torn[:25])                    # the second write was cut mid-line

    assert closed_files(events, 60.0) == [closed]
    first = compact_events(spark, warehouse, events, closed_after_s=60.0)
    assert first == {"files": 2, "deleted_files": 1, "inserted": 4}
    assert sorted(_event_ids(spark, warehouse)) == ["a0", "a1", "a2", "b1"]
    assert not closed.exists() and open_file.exists()         # today's file is still being written

    assert compact_events(spark, warehouse, events)["inserted"] == 0     # rerun: nothing new, no duplicates
    with open(open_file, "a") as handle:                     # the writer finishes the line later
        handle.write(torn[25:])
    assert compact_events(spark, warehouse, events)["inserted"] == 1
    assert sorted(_event_ids(spark, warehouse)) == ["a0", "a1", "a2", "b1", "b2"]
    row = (spark.read.format("delta").load(T.table_path(warehouse, C.EVENTS)).where("event_id = 'b1'").first())
    assert row["items"] == ["I1", "I2"] and row["ts"] is not None and row["variant"] is None


# --- indicators: a known answer --------------------------------------------------------------------------------


def test_indicators_match_hand_computed_values_and_rerun_is_idempotent(spark, tmp_path):
    events, warehouse = tmp_path / "events", tmp_path / "wh"
    events.mkdir()
    t = NOW.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    s = timedelta(seconds=1)
    lines = [
        # A/ r1: clicked I1 (shown), bought I1, then 10 s later another impression (r2): rec -> rec.
        _line("e1", "impression", "u1", "r1", t, items=["I1", "I2", "I3"], variant="A"),
        _line("e2", "click", "u1", "r1", t + s, item="I1", variant="A"),
        _line("e3", "purchase", "u1", "r1", t + 2 * s, item="I1", variant="A"),
        _line("e4", "impression", "u1", "r2", t + 10 * s, items=["I4", "I5"], variant="A"),
        # A/ r2: a click on an item that was NOT shown (not attributed), then scroll to end: a bad sign.
        _line("e5", "click", "u1", "r2", t + 11 * s, item="I9", variant="A"),
        _line("e6", "scroll_end", "u1", "r2", t + 12 * s, variant="A"),
        # A/ r3: another user, scroll to end after a click: not "no click".
        _line("e7", "impression", "u2", "r3", t, items=["I1", "I6"], variant="A"),
        _line("e8", "click", "u2", "r3", t + s, item="I6", variant="A"),
        _line("e9", "scroll_end", "u2", "r3", t + 2 * s, variant="A"),
        # B/ r4: nothing happens; same impression logged twice (counts once).
        _line("e10", "impression", "u3", "r4", t, items=["I7"], variant="B", version="v2"),
        _line("e11", "impression", "u3", "r4", t, items=["I7"], variant="B", version="v2"),
        # B/ r5: purchase without a click (still attributed), an hour later a new impression (no rec -> rec).
        _line("e12", "impression", "u3", "r5", t + 3600 * s, items=["I7", "I8"], variant="B", version="v2"),
        _line("e13", "purchase", "u3", "r5", t + 3601 * s, item="I8", variant="B", version="v2"),
    ]
    (events / f"events-{t:%Y%m%d}-host-1.jsonl").write_text("".join(lines))
    compact_events(spark, warehouse, events)
    rows = {r["variant"]: r for r in compute_indicators(spark, warehouse, session_gap_s=1800)}

    a, b = rows["A"], rows["B"]
    assert (a["version"], a["impressions"], a["clicks"], a["clicked"], a["purchases"]) == ("v1", 3, 2, 2, 1)
    assert a["ctr"] == pytest.approx(2 / 3) and a["purchase_rate"] == pytest.approx(1 / 3)
    assert a["rec_to_rec"] == pytest.approx(1 / 2)           # e2 followed by r2; e8 followed by nothing
    assert a["scroll_end_no_click"] == pytest.approx(1 / 3)  # r2 only
    assert a["users"] == 2 and a["coverage"] is None         # no gold/item_index in this warehouse
    assert (b["version"], b["impressions"], b["clicks"], b["purchases"], b["ctr"]) == ("v2", 2, 0, 1, 0.0)
    assert b["purchase_rate"] == pytest.approx(1 / 2) and b["rec_to_rec"] is None   # no clicks: undefined

    table = T.table_path(warehouse, C.INDICATORS)
    before = spark.read.format("delta").load(table).drop("computed_at").collect()
    compute_indicators(spark, warehouse, session_gap_s=1800)
    after = spark.read.format("delta").load(table).drop("computed_at").collect()
    assert len(before) == 2 and sorted(map(tuple, before)) == sorted(map(tuple, after))
    assert {r["day"] for r in after} == {t.date()}


# --- A/B assignment and statistics -------------------------------------------------------------------------------


def _ab(shares: dict[str, float], salt: str = "s1") -> ABSettings:
    return ABSettings(enabled=True, salt=salt, control=sorted(shares)[0],
                      variants={n: VariantSettings(share=p) for n, p in shares.items()})


def test_assignment_is_deterministic_and_balanced_within_binomial_bounds():
    users = [f"user-{i}" for i in range(20_000)]
    ab = _ab({"a": 0.2, "b": 0.3, "c": 0.5})
    first = [assign(ab, u) for u in users]
    assert first == [assign(ab, u) for u in users]                       # stable: no state, same answer
    assert first == [assign(ab.model_copy(), u) for u in reversed(users)][::-1]
    n = len(users)
    for name, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        sigma = math.sqrt(n * share * (1 - share))
        assert abs(first.count(name) - n * share) < 4 * sigma, name     # 4 sigma: fails ~1 in 16 000 salts
    counts = {name: first.count(name) for name in "abc"}
    assert AB.balance_test(counts, ab)["p_value"] > 1e-3
    # Another salt is an independent split: agreement with the first is ~ sum(share^2) = 0.38.
    other = [assign(_ab({"a": 0.2, "b": 0.3, "c": 0.5}, salt="s2"), u) for u in users]
    agree = sum(x == y for x, y in zip(first, other)) / n
    assert abs(agree - 0.38) < 4 * math.sqrt(0.38 * 0.62 / n)
    # A skewed split is caught by the sample-ratio check.
    assert AB.balance_test({"a": 2000, "b": 3000, "c": 4000}, ab)["p_value"] < 1e-6


def test_readout_statistics_match_textbook_values():
    # 60/100 vs 40/100: pooled p = 0.5, se = sqrt(0.25 * 0.02), z = 2.8284, two-sided p = 0.004678.
    test = AB.two_proportion_test(AB.Proportion(60, 100), AB.Proportion(40, 100))
    assert test["z"] == pytest.approx(2.828427, abs=1e-6) and test["p_value"] == pytest.approx(0.004678, abs=1e-6)
    # Wald interval of the difference: 0.2 +- 1.96 * sqrt(0.24/100 + 0.24/100).
    assert test["diff_low"] == pytest.approx(0.2 - 1.959964 * math.sqrt(0.0048), abs=1e-6)
    # Wilson 95 % interval of 60/100 (Newcombe 1998 / any calculator): [0.5020, 0.6906].
    low, high = AB.wilson(AB.Proportion(60, 100))
    assert (round(low, 4), round(high, 4)) == (0.5020, 0.6906)
    low, high = AB.wilson(AB.Proportion(0, 10))                 # 0/10: [0, 0.2775]
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)
    # chi-square(1) survival at its 95 % critical value, chi-square(2) at 5.991.
    assert AB._chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert AB._chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-6)


def test_experiment_config_refuses_bad_shares_and_names():
    with pytest.raises(ValueError, match="sum to 1"):
        _ab({"a": 0.5, "b": 0.4})
    with pytest.raises(ValueError, match="variant names"):
        ABSettings(variants={"a b": VariantSettings(share=1.0)}, control="a b")
    with pytest.raises(ValueError, match="control"):
        ABSettings(variants={"a": VariantSettings(share=1.0)}, control="b")


# --- durability: no acknowledged event lost across a crash and restart of a real gunicorn ----------------------


def _start_gunicorn(warehouse: Path, serve) -> subprocess.Popen:
    from recsys.serve.server import gunicorn_command, gunicorn_env

    proc = subprocess.Popen(gunicorn_command(serve), env=gunicorn_env(warehouse, serve), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{serve.port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("gunicorn did not come up")


def _post_until(port: int, prefix: str, stop: threading.Event, acked: list[str]) -> None:
    """Post one event per request until ``stop`` or the server goes away; keep the ids it acknowledged."""
    from recsys.monitor.simulate import HttpClient

    client = HttpClient(f"http://127.0.0.1:{port}", timeout_s=5)
    i = 0
    while not stop.is_set():
        try:
            user = f"{prefix}-{i % 7}"                 # an impression the test signs as the API would
            request_id = Signer([SIGNING_KEY]).sign(time.time_ns() // 1_000_000, user, ["I1"])
            status, body = client.post("/v1/events", {"event_type": "impression", "user_id": user, "items": ["I1"],
                                                      "request_id": request_id})
        except (OSError, http.client.HTTPException):   # killed mid-response (IncompleteRead): not acknowledged
            return
        assert status == 202, body
        acked.extend(body["event_ids"])
        i += 1


def test_no_acknowledged_event_is_lost_when_the_api_is_killed_and_restarted(spark, tmp_path):
    from recsys.serve.settings import ServeSettings

    warehouse = tmp_path / "wh"
    warehouse.mkdir()
    serve = ServeSettings(port=free_port(), workers=2, access_log=False, signing_keys=[SIGNING_KEY],
                          events_per_s=1e6).resolved(warehouse)
    acked: list[str] = []
    proc = _start_gunicorn(warehouse, serve)
    stop = threading.Event()
    poster = threading.Thread(target=_post_until, args=(serve.port, "a", stop, acked))
    poster.start()
    while len(acked) < 150 and poster.is_alive():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)             # a crash mid-traffic: no graceful shutdown, no flush
    proc.wait(10)
    poster.join(10)
    before_restart = len(acked)
    assert before_restart >= 150

    proc = _start_gunicorn(warehouse, serve)         # same folders: the new workers append to new files
    stop = threading.Event()
    poster = threading.Thread(target=_post_until, args=(serve.port, "b", stop, acked))
    poster.start()
    while len(acked) < before_restart + 50:
        time.sleep(0.05)
    stop.set()
    poster.join(10)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)

    compact_events(spark, warehouse, serve.events_dir)
    stored = _event_ids(spark, warehouse)
    assert len(stored) == len(set(stored))                       # each event once
    assert set(acked) <= set(stored)                             # every acknowledged event survived the crash
    assert len(stored) - len(acked) <= 1           # at most the one request in flight when it was killed
    assert compact_events(spark, warehouse, serve.events_dir)["inserted"] == 0


# --- incremental retrain with the promotion gate, then good vs random through the API ----------------------------


@pytest.fixture(scope="module")
def deployed(spark, tmp_path_factory):
    """A small planted-cluster dump deployed in steps, as production would see it:

    1. only the Appliances files are there; ``recsys pipeline`` with popularity and a crippled rank-1 ALS (one
       iteration) → production is one of these two weak models;
    2. the All_Beauty files land; retrain with a real implicit ALS (ingest takes only the new files) → the gate,
       re-scoring the weak production model on the new split, must promote;
    3. nothing new; retrain with popularity → the gate must refuse it (worse than ALS on the same split);
    4. a random-lists version is published, then the ALS version is made current again: two versions to compare.
    """
    from recsys.config import load_settings
    from recsys.monitor.random_version import publish_random
    from recsys.pipeline import run_pipeline
    from recsys.publish import switch_version
    from recsys.pipeline import run_retrain as retrain
    from recsys.synth import generate, meta_file, reviews_file

    root = tmp_path_factory.mktemp("monitor")
    dump, source = root / "dump", root / "src"
    settings = load_settings(warehouse=root / "wh", source=source, reports=root / "reports")
    settings.synth = settings.synth.model_copy(update={"users": 500, "items": 100, "reviews": 4000, "clusters": 4,
                                                       "categories": ["Appliances", "All_Beauty"]})
    settings.train.params = settings.train.params.updated(
        {"implicit_als": {"factors": 1, "regularization": 0.05, "alpha": 10.0, "iterations": 1}})
    settings.train.models = ["popularity", "implicit_als"]
    settings.publish = settings.publish.model_copy(update={"k": 10, "spare": 3})
    settings.features.split = settings.features.split.model_copy(update={"strategy": "leave_last_out"})
    generate(dump, settings.synth, progress=False)
    source.mkdir()
    for name in (reviews_file("Appliances"), meta_file("Appliances")):
        shutil.copy(dump / name, source / name)

    first = run_pipeline(spark, settings)
    settings.train.params = settings.train.params.updated(
        {"implicit_als": {"factors": 8, "regularization": 0.05, "alpha": 10.0, "iterations": 10}})
    for name in (reviews_file("All_Beauty"), meta_file("All_Beauty")):
        shutil.copy(dump / name, source / name)
    better = retrain(spark, settings, models=["implicit_als"])
    good_version = ops.current_version(settings.warehouse)
    worse = retrain(spark, settings, models=["popularity"])
    random_version = publish_random(spark, settings, "v-random", seed=7)["version"]
    switch_version(spark, settings, good_version)
    users = [r[0] for r in T.read_table(spark, settings.warehouse, C.USER_INDEX).select(C.USER_ID).collect()]
    return {"settings": settings, "dump": dump, "first": first, "better": better, "worse": worse,
            "good": good_version, "random": random_version, "users": sorted(users)}


def test_retrain_ingests_only_the_new_files_and_the_gate_promotes_the_better_model(spark, deployed):
    better, first = deployed["better"], deployed["first"]
    assert first["evaluate"]["decision"]["promoted"] in ("popularity", "implicit_als")
    assert better["ingest"]["files_ingested"] == 2 and better["ingest"]["files_skipped"] == 2
    decision = better["evaluate"]["decision"]
    assert decision["promoted"] == "implicit_als"
    assert decision["basis"] == "re-measured on this run's test split"
    assert decision["map@10"] > decision["production"]            # ALS beats popularity on the planted clusters
    assert better["publish_switch"]["version"] == deployed["good"]
    prod = ops.production_model(deployed["settings"].warehouse)
    assert (prod["run_id"], prod["model"]) == (better["run_id"], "implicit_als")


def test_the_gate_refuses_a_worse_model_and_records_why(spark, deployed):
    worse, settings = deployed["worse"], deployed["settings"]
    assert worse["ingest"]["files_ingested"] == 0                  # nothing new: every file skipped
    decision = worse["evaluate"]["decision"]
    tolerance = settings.evaluate.promotion_tolerance
    assert decision["promoted"] is None and decision["rejected"] == "popularity"
    assert decision["map@10"] < decision["production"] - tolerance
    assert "publish_write" not in worse                            # nothing published: ALS keeps serving
    rows = ops.run_models(settings.warehouse, worse["run_id"])
    assert [(r["model"], r["stage"]) for r in rows] == [("popularity", ops.REJECTED)]
    assert "worse than production implicit_als" in rows[0]["reason"]
    assert ops.production_model(settings.warehouse)["run_id"] == deployed["better"]["run_id"]


def test_planted_good_model_beats_random_on_ctr_through_the_api(spark, deployed, tmp_path):
    """An A/B test through the real app: half the users get the ALS version, half the random one; simulated users
    click items of their own planted cluster. The ALS arm's CTR must be higher with p < 0.01."""
    from recsys.monitor.indicators import run_indicators
    from recsys.monitor.report import run_ab_report
    from recsys.monitor.simulate import FlaskClient, Simulator
    from recsys.serve.app import create_app

    settings = deployed["settings"]
    ab = ABSettings(enabled=True, experiment="good-vs-random", salt="sim-1", control="control", variants={
        "control": VariantSettings(version="current", share=0.5),
        "treatment": VariantSettings(version=deployed["random"], share=0.5)})
    settings = settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"ab": ab}),
                                           "reports": tmp_path})
    serve = settings.serve.model_copy(update={"events_per_s": 1e6})    # one client sends every user's events
    app = create_app(settings.warehouse, serve, ab=ab)
    simulator = Simulator(FlaskClient(app), deployed["dump"], seed=3)
    summary = simulator.run(users=300, sessions=2, user_ids=deployed["users"])   # 500 users in the dump
    assert summary["counts"]["recommendations_200"] == 600 and summary["counts"]["events_202"] == 600

    result = run_indicators(spark, settings)
    by_version = {r["version"]: r for r in result["indicators"] if r["variant"] is not None}
    out = run_ab_report(spark, settings)                           # what recsys ab-report and the DAG run
    path = Path(out["report"])
    assert path == tmp_path / "ab-good-vs-random" / "readout.json"
    readout = json.loads(path.read_text())
    control, treatment = readout["variants"]["control"], readout["variants"]["treatment"]
    test = readout["tests"]["treatment"]["ctr"]
    print(f"\nCTR good={control['ctr']:.4f} (n={control['impressions']}) random={treatment['ctr']:.4f} "
          f"(n={treatment['impressions']}) diff={test['diff']:.4f} z={test['z']:.2f} p={test['p_value']:.3g}; "
          f"users per arm {control['users']}/{treatment['users']} (SRM p={readout['balance']['p_value']:.3f})")

    assert control["versions"] == [deployed["good"]]               # the API served each arm its own version
    assert deployed["random"] in treatment["versions"]
    assert control["ctr"] > treatment["ctr"] and test["p_value"] < 0.01
    assert test["diff_high"] < 0          # diff = treatment - control: the whole interval favours the good model
    assert readout["balance"]["p_value"] > 1e-3                    # 300 users split ~150/150, no sample ratio mismatch
    assert control["offline"][deployed["good"]]["metrics"]["map@10"] > 0        # offline beside online
    assert by_version[deployed["random"]]["ctr"] < by_version[deployed["good"]]["ctr"]
    assert path.is_file() and (path.parent / "readout.html").is_file()


def test_ab_report_without_an_experiment_writes_nothing_and_says_why(tmp_path):
    from recsys.config import load_settings
    from recsys.monitor.report import run_ab_report

    out = run_ab_report(None, load_settings(warehouse=tmp_path / "wh", reports=tmp_path / "reports"))
    assert out["report"] is None and "enabled is false" in out["reason"]
    assert not (tmp_path / "reports").exists()
