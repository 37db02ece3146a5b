"""The gunicorn worker class of the API: gevent, with gunicorn's own refusals answered in the API's JSON error shape.

Why gevent: a client that sends its headers and then stalls holds a greenlet, not one of a few threads, so stalled
clients cannot starve the others (with gthread, 40 of them kept every ``/health`` probe waiting for 20 s). Lookups are
short CPU work on memory-mapped arrays, so one greenlet at a time per worker loses nothing; the workers use the cores.
After each request the worker waits for the event loop to go idle (``gevent.idle``): a keep-alive client whose next
request is already in would otherwise be read and served at once, again and again, without a switch, while the
other connections wait (bench_api, one worker, 8 connections: p50 0.4 ms but p99 27-61 ms; with the yield p50 3.6 ms,
p99 5.2 ms, the same throughput).

A stalled client is not kept forever either: its headers must arrive within gunicorn's keep-alive (``timeout_ctx``,
else the connection is closed) and the rest of its request within ``serve.request_timeout_s`` (else a JSON 408).

Why the override: gunicorn answers what it refuses before the app (a request line over ``limit_request_line``, too
many or too long headers, a broken chunked body) with an HTML page. :meth:`JsonGeventWorker.handle_error` writes the
same ``{"error": {"code", "message"}}`` the app does, so a client parses every refusal the same way.
"""

from __future__ import annotations

from ssl import SSLError

import gevent
import orjson
from gunicorn import util
from gunicorn.http.errors import (
    ExpectationFailed, ForbiddenProxyRequest, InvalidResponseHeader, InvalidResponseHeaderName, LimitRequestHeaders,
    LimitRequestLine, ParseException, UnsupportedTransferCoding,
)
from gunicorn.workers.ggevent import GeventWorker

from recsys.serve.settings import ServeEnv

# gunicorn's refusal -> (status, reason, code); any other parse error of the request is a 400 bad_request.
REFUSALS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (LimitRequestLine, 414, "URI Too Long", "uri_too_long"),
    (LimitRequestHeaders, 431, "Request Header Fields Too Large", "request_header_fields_too_large"),
    (UnsupportedTransferCoding, 501, "Not Implemented", "unsupported_transfer_coding"),
    (ExpectationFailed, 417, "Expectation Failed", "expectation_failed"),
    (ForbiddenProxyRequest, 403, "Forbidden", "forbidden"),
    (SSLError, 403, "Forbidden", "forbidden"),
)
APP_FAULTS = (InvalidResponseHeader, InvalidResponseHeaderName)


def refusal(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, code, message) of what gunicorn refuses; a fault of the app (or anything else) is a 500."""
    if isinstance(exc, gevent.Timeout):
        return 408, "Request Timeout", "request_timeout", "the request was not received in time"
    if isinstance(exc, APP_FAULTS) or not isinstance(exc, (ParseException, SSLError)):
        return 500, "Internal Server Error", "internal_error", "internal error; it has been logged"
    for kind, status, reason, code in REFUSALS:
        if isinstance(exc, kind):
            return status, reason, code, str(exc)[:200] or reason
    return 400, "Bad Request", "bad_request", str(exc)[:200] or "malformed request"


def error_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response closing the connection, its body in the API's error shape."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JsonGeventWorker(GeventWorker):
    """gunicorn's gevent worker whose own refusals are JSON and whose requests have a deadline (module docstring)."""

    request_timeout_s = 10.0

    def init_process(self) -> None:
        self.request_timeout_s = ServeEnv().serve.request_timeout_s
        super().init_process()

    def handle_request(self, listener_name, req, sock, addr):  # noqa: ANN001 - gunicorn's signature
        """One request (its body read by the app included) within ``request_timeout_s``; gevent.Timeout is a
        BaseException, so it passes the app's handlers and reaches :meth:`handle_error` as a 408."""
        with gevent.Timeout(self.request_timeout_s):
            handled = super().handle_request(listener_name, req, sock, addr)
        gevent.idle()   # every other ready connection goes first (module docstring)
        return handled

    def handle_error(self, req, client, addr, exc):  # noqa: ANN001 - gunicorn's signature
        status, reason, code, message = refusal(exc)
        if status == 500:
            self.log.error("error handling request", exc_info=exc)
        else:
            self.log.warning("refused request from ip=%s status=%d: %s", (addr or ("",))[0], status, message)
        try:
            util.write_nonblock(client, error_response(status, reason, code, message))
        except Exception:  # noqa: BLE001 - the client may be gone; nothing left to tell it
            self.log.debug("failed to send the error response")
