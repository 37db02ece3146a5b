"""The gunicorn worker class of the API: gevent, with gunicorn's own refusals answered in the API's JSON error shape.

Why gevent: a client that sends its headers and then stalls holds a greenlet, not one of a few threads, so stalled
clients cannot starve the others (with gthread, 40 of them kept every ``/health`` probe waiting for 20 s). Lookups are
short CPU work on memory-mapped arrays, so one greenlet at a time per worker loses nothing; the workers use the cores.
After each request the worker waits for the event loop to go idle (``gevent.idle``): a keep-alive client whose next
request is already in would otherwise be read and served at once, again and again, without a switch, while the
other connections wait (bench_api, one worker, 8 connections: p50 0.4 ms but p99 27-61 ms; with the yield p50 3.6 ms,
p99 5.2 ms, the same throughput).

Connections are spread over the workers by least connections (:mod:`recsys.serve.balance`): left to whichever worker
woke first, one often took all 8 of a burst and served them on one core while the other idled.

A stalled client is not kept forever either: its headers must arrive within gunicorn's keep-alive (``timeout_ctx``,
else the connection is closed) and the rest of its request within ``serve.request_timeout_s`` (else a JSON 408).

Why the override: gunicorn answers what it refuses before the app (a request line over ``limit_request_line``, too
many or too long headers, a broken chunked body) with an HTML page. :meth:`JsonGeventWorker.handle_error` writes the
same ``{"error": {"code", "message"}}`` the app does, so a client parses every refusal the same way.
"""

from __future__ import annotations

from functools import partial
from ssl import SSLError

import gevent
import orjson
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.http.errors import (
    ExpectationFailed, ForbiddenProxyRequest, InvalidResponseHeader, InvalidResponseHeaderName, LimitRequestHeaders,
    LimitRequestLine, ParseException, UnsupportedTransferCoding,
)
from gunicorn.workers.ggevent import GeventWorker

from recsys.serve.balance import BalancedServer, ConnectionTable
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
    connection_table: ConnectionTable | None = None   # shared by the workers of this master (recsys.serve.balance)

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - gunicorn's
        """In the master, before the fork: the table every worker of this master shares, and this worker's slot."""
        super().__init__(*args, **kwargs)
        if JsonGeventWorker.connection_table is None:
            JsonGeventWorker.connection_table = ConnectionTable()
        self.table_slot = self.connection_table.claim()

    def init_process(self) -> None:
        self.request_timeout_s = ServeEnv().serve.request_timeout_s
        super().init_process()

    def server_class(self, listener, spawn, ssl_context=None, **_pywsgi) -> BalancedServer:  # noqa: ANN001, ANN003
        """gunicorn's run() builds each listener's server with this (its pywsgi arguments unused): a server that
        balances connections over the workers and hands each to gunicorn's own handler, as its default server does."""
        ssl = {"ssl_context": ssl_context} if ssl_context else {}
        if self.cfg.reuse_port:     # a socket of its own: a connection left in it would wait for this worker alone
            return StreamServer(listener, handle=partial(self.handle, listener), spawn=spawn, **ssl)
        return BalancedServer(listener, self.connection_table, self.table_slot, handle=partial(self.handle, listener),
                              spawn=spawn, **ssl)

    def notify(self) -> None:
        """gunicorn's heartbeat, every second while the worker runs or finishes its connections: also the other
        workers', who leave connections to this one only while it accepts them."""
        super().notify()
        if self.alive:
            self.connection_table.beat(self.table_slot)
        else:
            self.connection_table.release(self.table_slot)

    def run(self) -> None:
        try:
            super().run()
        finally:        # also when gunicorn's run returns at once, with no connection left to finish
            self.connection_table.release(self.table_slot)

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
