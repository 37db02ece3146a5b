"""Flask app factory of the recommendation API (its routes, parameters and error shape are documented below).

The routes are one Blueprint (:data:`api`) of module-level views; each reads the state of the app serving it
(:class:`Runtime`), which :func:`create_app` builds and registers the Blueprint beside.

Every answer is JSON, errors included (``{"error": {"code", "message"}}`` with a 4xx for bad input); a catch-all
handler turns an unexpected exception into a JSON 500 that is logged, and the tests fuzz the routes so that no input
reaches it. Responses are serialised with orjson straight from the memory-mapped arrays (float32 scores included).
Every list carries a signed ``request_id`` (:mod:`recsys.serve.signing`), and ``POST /v1/events`` takes only events
about such lists (:mod:`recsys.serve.admission`); ``/openapi.json`` describes it all (:mod:`recsys.serve.openapi`).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from recsys.constants import ITEM_ID, MODEL, USER_ID, VERSION
from recsys.ids import is_valid_id
from recsys.serve.admission import admit
from recsys.serve.blend import interleave, recent_items, remember, session_of
from recsys.serve.clients import FORWARDED_FOR, ClientAddress
from recsys.serve.denylist import DenyList
from recsys.serve.errors import ApiError
from recsys.serve.events import VARIANT, EventError, validate_event
from recsys.serve.experiment import ABSettings
from recsys.serve.ledger import Entry, Ledger
from recsys.serve.lists import POPULARITY, pick, popular_list
from recsys.serve.metrics import CONTENT_TYPE, Metrics
from recsys.serve.session_scoring import SessionQuery
from recsys.serve.session_scoring import recommend as recommend_session
from recsys.serve.openapi import build_spec
from recsys.serve.settings import ServeSettings
from recsys.serve.signing import Signer
from recsys.serve.snapshot import METHODS, Snapshot
from recsys.serve.store import ServingState, SnapshotStore
from recsys.serve.variants import AssignedEventLog, VariantRouter

log = logging.getLogger(__name__)
access_log = logging.getLogger("recsys.serve.access")

K_PATTERN = re.compile(r"[0-9]{1,9}")            # decimal digits (fullmatch); the cap keeps int() cheap
LOOPBACK = frozenset({"127.0.0.1", "::1"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=_JSON_OPTIONS), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status)


# --- request parsing -----------------------------------------------------------------------------------------


def _check_id(value: str, name: str) -> str:
    if not is_valid_id(value):
        raise ApiError(400, f"invalid_{name}", f"{name} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def _params(allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters, refusing unknown or repeated ones (a typo must not be silently ignored)."""
    args = request.args
    unknown = [key for key in args if key not in allowed]
    if unknown:
        raise ApiError(400, "unknown_parameter",
                       f"unknown query parameter(s); allowed: {', '.join(sorted(allowed)) or 'none'}")
    for key in args:
        if len(args.getlist(key)) > 1:
            raise ApiError(400, "repeated_parameter", f"query parameter {key} given more than once")
    return args.to_dict()


def _k(params: dict[str, str], settings: ServeSettings) -> int:
    raw = params.get("k")
    if raw is None:
        return settings.default_k
    if not K_PATTERN.fullmatch(raw) or not 1 <= int(raw) <= settings.max_k:
        raise ApiError(400, "invalid_k", f"k must be an integer between 1 and {settings.max_k}")
    return int(raw)


def _category(params: dict[str, str], snapshot: Snapshot) -> int | None:
    name = params.get("category")
    if name is None:
        return None
    _check_id(name, "category")
    code = snapshot.category_index(name)
    if code is None:
        raise ApiError(404, "unknown_category", "no such category in the published version")
    return code


def _exclude(params: dict[str, str], settings: ServeSettings) -> frozenset[str]:
    raw = params.get("exclude")
    return _exclude_ids([a for a in raw.split(",") if a] if raw else [], settings)


def _exclude_ids(asins: Any, settings: ServeSettings) -> frozenset[str]:
    """``exclude`` as a list of asins (the query's, split at commas; a JSON body's as sent)."""
    if not isinstance(asins, list):
        raise ApiError(400, "invalid_exclude", "exclude must be a list of asins")
    if len(asins) > settings.max_exclude:
        raise ApiError(400, "invalid_exclude", f"exclude takes at most {settings.max_exclude} asins")
    for asin in asins:
        _check_id(asin, "exclude")
    return frozenset(asins)


def _json_k(body: dict[str, Any], settings: ServeSettings) -> int:
    """A JSON body's ``k``: an integer (not true, not 20.0), then the query's rule."""
    raw = body.get("k")
    if raw is not None and type(raw) is not int:
        raw = "not an integer"
    return _k({} if raw is None else {"k": str(raw)}, settings)


def _session_items(items: Any, settings: ServeSettings) -> list[str]:
    """The session: 1..``max_session_items`` asins, oldest first; an asin may come back (a view, then a cart)."""
    if not isinstance(items, list) or not 1 <= len(items) <= settings.max_session_items:
        raise ApiError(400, "invalid_items", f"items must be a list of 1..{settings.max_session_items} asins")
    for asin in items:
        _check_id(asin, "items")
    return items


def _json_object(settings: ServeSettings, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object of ``allowed`` fields only (a misspelt field must not be silently ignored)."""
    try:
        body = orjson.loads(_body(settings.max_body_bytes))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s); allowed: {', '.join(sorted(allowed))}")
    return body


def _body(limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes whether its length is declared or it is chunked
    (werkzeug cuts a chunked body at the limit and hands on the truncated JSON, a 400 that hides the cause)."""
    declared = request.content_length
    if declared is None and not request.environ.get("wsgi.input_terminated"):
        return b""                                  # no length and no chunked framing: WSGI says no body
    if declared is not None and declared > limit:
        raise ApiError(413, "request_entity_too_large", f"the body is over {limit} bytes")
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "request_entity_too_large", f"the body is over {limit} bytes")
    return data


def _ready(store: SnapshotStore) -> tuple[Snapshot, DenyList]:
    state: ServingState = store.state          # read once: a concurrent swap cannot mix two versions
    if state.snapshot is None:
        raise ApiError(503, "not_ready", "no published version loaded yet")
    return state.snapshot, state.denylist


# --- per-app state ----------------------------------------------------------------------------------------


EXTENSION = "recsys"


class Runtime(TypedDict):
    """What one app serves from, built by :func:`create_app` and kept in ``app.extensions["recsys"]``: the views
    are module-level functions, so two apps (two warehouses) in one process never share state."""

    settings: ServeSettings
    store: SnapshotStore
    router: VariantRouter
    events: AssignedEventLog
    metrics: Metrics
    signer: Signer
    ledger: Ledger
    clients: ClientAddress
    openapi: bytes
    clock: Callable[[], float]          # epoch seconds (time.time; tests inject theirs)


def _runtime() -> Runtime:
    return current_app.extensions[EXTENSION]


def _client() -> str:
    """The address of who sent this request (``serve.trusted_proxies``: :mod:`recsys.serve.clients`)."""
    return _runtime()["clients"](request.remote_addr or "-", request.headers.getlist(FORWARDED_FOR))


def _endpoint() -> str:
    """The view's own name (``popular``), the label of metrics and logs; "unmatched" when no route matched."""
    return request.endpoint.removeprefix(f"{api.name}.") if request.endpoint else "unmatched"


def _request_id(user_id: str, items: list[dict[str, Any]]) -> str:
    """The signed id of the list ``items`` served to ``user_id`` ("" if to no user): what events must echo."""
    runtime = _runtime()
    g.request_id = runtime["signer"].sign(int(runtime["clock"]() * 1000), user_id, [i[ITEM_ID] for i in items])
    return g.request_id


# --- the routes ----------------------------------------------------------------------------------------------

api = Blueprint("api", __name__)


@api.before_app_request
def _start() -> None:
    g.started = time.perf_counter()
    _runtime()["store"].tick()


@api.after_app_request
def _finish(response: Response) -> Response:
    runtime = _runtime()
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    endpoint = _endpoint()
    method = request.method if request.method in KNOWN_METHODS else "other"   # bounded label values
    runtime["metrics"].observe(endpoint, method, response.status_code, elapsed)
    if runtime["settings"].access_log:
        # No path or ids: the path holds user ids, and logs outlive an erasure.
        access_log.info("request endpoint=%s method=%s status=%d ms=%.3f request_id=%s", endpoint, method,
                        response.status_code, elapsed * 1000.0, g.get("request_id", "-"))
    return response


@api.app_errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    response = _error(exc.status, exc.code, exc.message)
    response.headers.update(exc.headers)
    return response


@api.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    response = _error(status, code, exc.description or exc.name or "error")
    allowed = getattr(exc, "valid_methods", None)       # 405 keeps its Allow header
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


@api.app_errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on endpoint=%s", _endpoint())
    return _error(500, "internal_error", "internal error; it has been logged")


@api.get("/v1/users/<user_id>/recommendations")
def user_recommendations(user_id: str) -> Response:
    """The user's published list (the popular list without one), blended with the user's recent session
    (:mod:`recsys.serve.blend`) when ``serve.session_blend`` > 0 and the ledger holds items of the last window."""
    runtime = _runtime()
    settings = runtime["settings"]
    _check_id(user_id, "user_id")
    params = _params(frozenset({"k", "category", "exclude"}))
    k = _k(params, settings)
    variant, snapshot, denylist = runtime["router"].route(user_id)
    if snapshot is None:
        raise ApiError(503, "not_ready", "the version serving this user is not loaded yet")
    category = _category(params, snapshot)
    exclude = _exclude(params, settings)
    erased = denylist.user_erased(user_id)           # first: an erased user's session is never even read
    found = None if erased else snapshot.user_slice(user_id)
    session = None
    if not erased and settings.session_blend > 0:
        recent = recent_items(runtime["ledger"], runtime["signer"], user_id, runtime["clock"](),
                              settings.max_session_items)
        session = session_of(snapshot, denylist, recent, user_id, k, category, exclude)
    leave_out = exclude if session is None else exclude | frozenset(session.items)
    if found is not None:
        lo, hi, model = found
        items = pick(snapshot, snapshot.user_items[lo:hi], snapshot.user_scores[lo:hi], k, denylist, leave_out,
                     category)
        source = "personalized"
    else:
        items = popular_list(snapshot, category, k, denylist, leave_out)
        model, source = POPULARITY, "popular"
    if session is not None:
        if found is not None:
            items, source = interleave(items, session.answer.items, k, settings.session_blend), "personalized+session"
        else:                                        # no list of their own: the session's, popular filling it
            items, model, source = interleave(items, session.answer.items, k, 1.0), session.answer.model, "session"
    body = {USER_ID: user_id, VERSION: snapshot.version, MODEL: model, "source": source,
            "request_id": _request_id(user_id, items), "items": items}
    if session is not None:
        body["session_items"] = len(session.items)
        body["session_model"] = session.answer.model
    if variant is not None:
        body[VARIANT] = variant
    return _json(body)


@api.get("/v1/items/<parent_asin>/similar")
def similar_items(parent_asin: str) -> Response:
    _check_id(parent_asin, "parent_asin")
    runtime = _runtime()
    params = _params(frozenset({"k", "method"}))
    k = _k(params, runtime["settings"])
    method = params.get("method")
    if method is not None and method not in METHODS:
        raise ApiError(400, "invalid_method", f"method must be one of {', '.join(METHODS)}")
    snapshot, denylist = _ready(runtime["store"])
    item = snapshot.item_index(parent_asin)
    if item is None or denylist.item_denied(parent_asin):
        raise ApiError(404, "unknown_item", "no such item in the published version")
    items: list[dict[str, Any]] = []
    for candidate in ([method] if method else list(METHODS)):
        found = snapshot.similar_slice(candidate, item)
        if found is not None:
            items = pick(snapshot, found[0], found[1], k, denylist, frozenset({parent_asin}), None)
            if items or method:
                method = candidate
                break
    return _json({ITEM_ID: parent_asin, VERSION: snapshot.version, "method": method,
                  "request_id": _request_id("", items), "items": items})


@api.get("/v1/popular")
def popular() -> Response:
    runtime = _runtime()
    params = _params(frozenset({"k", "category"}))
    k = _k(params, runtime["settings"])
    snapshot, denylist = _ready(runtime["store"])
    category = _category(params, snapshot)
    items = popular_list(snapshot, category, k, denylist, frozenset())
    return _json({VERSION: snapshot.version, "category": params.get("category"), "request_id": _request_id("", items),
                  "items": items})


SESSION_FIELDS = frozenset({"items", "k", "user_id", "category", "exclude"})


@api.post("/v1/sessions/recommendations")
def session_recommendations() -> Response:
    """The next items after a session (:mod:`recsys.serve.session_scoring`), computed now from the snapshot."""
    runtime = _runtime()
    settings = runtime["settings"]
    _params(frozenset())
    body = _json_object(settings, SESSION_FIELDS)
    items = _session_items(body.get("items"), settings)
    k = _json_k(body, settings)
    user_id = body.get("user_id")
    if user_id is not None:
        _check_id(user_id, "user_id")
    exclude = _exclude_ids([] if body.get("exclude") is None else body["exclude"], settings)
    snapshot, denylist = _ready(runtime["store"])
    query = SessionQuery(items, k, _category(body, snapshot), exclude, user_id)
    answer = recommend_session(snapshot, denylist, query)
    out = {VERSION: snapshot.version, MODEL: answer.model, "source": answer.source,
           "unknown_items": answer.unknown_items, "request_id": _request_id(user_id or "", answer.items),
           "items": answer.items}
    if user_id is not None:
        out[USER_ID] = user_id
    return _json(out)


@api.post("/v1/events")
def post_events() -> Response:
    """Events about lists the API served (the rules: :mod:`recsys.serve.admission`); 202 once stored and fsynced."""
    runtime = _runtime()
    settings = runtime["settings"]
    _params(frozenset())
    try:
        body = orjson.loads(_body(settings.max_body_bytes))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body must be a JSON object or a list of them") from None
    batch = body if isinstance(body, list) else [body]
    if not 1 <= len(batch) <= settings.max_event_batch:
        raise ApiError(400, "invalid_event", f"send 1..{settings.max_event_batch} events per request")
    now = datetime.fromtimestamp(runtime["clock"](), timezone.utc)
    try:
        records = [validate_event(event, settings.max_k, now) for event in batch]
    except EventError as exc:
        raise ApiError(400, "invalid_event", str(exc)) from None
    state = runtime["store"].state
    snapshot = state.snapshot
    event_log = runtime["events"]

    def known_user(user_id: str) -> bool:
        served = runtime["router"].route(user_id)[1]
        return served is not None and served.user_slice(user_id) is not None

    def store(kept: list[dict[str, Any]], entry: Entry) -> list[str]:
        kept = [r for r in kept if not state.denylist.user_erased(r[USER_ID])]     # erased: never stored
        if not kept:
            return []
        if settings.session_blend > 0:     # before the append: a failed append rolls the recent rows back too
            remember(entry, runtime["signer"], kept, settings.max_session_items)
        return event_log.append(kept, snapshot.version if snapshot else None, snapshot.model if snapshot else None)

    admitted = admit(records, signer=runtime["signer"], ledger=runtime["ledger"], settings=settings,
                     client=_client(), known_user=known_user, now_s=now.timestamp(), store=store,
                     log_bytes=event_log.folder_bytes)
    return _json({"accepted": len(admitted.event_ids), "event_ids": admitted.event_ids,
                  "duplicates": admitted.duplicates}, 202)


@api.get("/health")
def health() -> Response:
    return _json({"status": "ok"})


@api.get("/ready")
def ready() -> Response:
    snapshot = _runtime()["store"].state.snapshot
    if snapshot is None:
        return _error(503, "not_ready", "no published version loaded yet")
    return _json({"status": "ready", VERSION: snapshot.version, MODEL: snapshot.model,
                  "published_at": snapshot.published_at.isoformat()})


@api.get("/metrics")
def prometheus() -> Response:
    """Prometheus text; with ``serve.metrics_token`` set, for a bearer of it, else for loopback clients only."""
    runtime = _runtime()
    token = runtime["settings"].metrics_token
    if token is None:
        if _client() not in LOOPBACK:
            raise ApiError(403, "forbidden", "/metrics answers loopback clients only (serve.metrics_token unset)")
    elif not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                 f"Bearer {token.get_secret_value()}".encode()):
        raise ApiError(401, "unauthorized", "/metrics wants Authorization: Bearer <serve.metrics_token>",
                       {"WWW-Authenticate": "Bearer"})
    return Response(runtime["metrics"].render(runtime["store"]), mimetype=None, content_type=CONTENT_TYPE)


@api.get("/openapi.json")
def openapi() -> Response:
    return Response(_runtime()["openapi"], mimetype="application/json")


# --- the app -------------------------------------------------------------------------------------------------


def create_app(warehouse: Path | str, settings: ServeSettings | None = None, *,
               wait_for_build: bool = True, ab: ABSettings | None = None,
               clock: Callable[[], float] = time.time) -> Flask:
    """The API over the published version under ``warehouse``.

    Loads the current snapshot before returning, building it first if missing (``wait_for_build=False``: in the
    background, the app answering 503 until it is ready; what gunicorn workers use). With an enabled ``ab``
    experiment, user recommendations come from the snapshot of the user's variant (``recsys.serve.variants``)
    and events are stamped with that variant and version. ``clock`` (epoch seconds) stamps events, issues request
    ids and bounds the recent session: tests pass their own rather than sleeping.
    """
    settings = (settings or ServeSettings()).resolved(warehouse)
    store = SnapshotStore(Path(warehouse), settings)
    store.start(wait_for_build)
    router = VariantRouter(warehouse, settings, store, ab)
    router.start(wait_for_build)
    assert settings.events_dir is not None

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, PROVIDE_AUTOMATIC_OPTIONS=False)
    app.url_map.merge_slashes = False          # "/v1//popular" is a JSON 404, not an HTML redirect
    assert settings.ledger_path is not None
    keys = [key.get_secret_value() for key in settings.signing_keys]
    if not keys:
        log.warning("serve.signing_keys unset: this app signs with a key of its own, so its request ids are not "
                    "taken by another process")
        keys = [secrets.token_hex(32)]
    app.extensions[EXTENSION] = Runtime(settings=settings, store=store, router=router,
                                        events=AssignedEventLog(settings.events_dir, router), metrics=Metrics(),
                                        signer=Signer(keys),
                                        ledger=Ledger(settings.ledger_path, settings.session_window_s),
                                        clients=ClientAddress(settings.trusted_proxies),
                                        openapi=orjson.dumps(build_spec(settings.max_k, settings.max_event_batch,
                                                                    settings.max_session_items, settings.max_exclude)),
                                        clock=clock)
    app.register_blueprint(api)
    return app
