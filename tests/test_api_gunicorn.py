"""The API under real gunicorn, over real sockets: what gunicorn refuses before the app is JSON in the API's error
shape, stalled clients do not keep /health or lookups waiting, and keep-alive connections are spread evenly over the
workers. Marked ``slow`` (so ``heavy``): one gunicorn, two workers, for the module."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netutil import free_port
from test_serve import make_warehouse

pytestmark = pytest.mark.slow
REQUEST_TIMEOUT_S = 3.0
LATENCY_BOUND_S = 0.1
STALLED = 40


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory) -> tuple[int, int]:
    """(port, pid of the gunicorn master)."""
    warehouse = make_warehouse(tmp_path_factory.mktemp("gunicorn") / "wh")
    port = free_port()
    script = ("import sys; from recsys.serve import ServeSettings, run_server; "
              "run_server(sys.argv[1], port=int(sys.argv[2]), workers=2, "
              f"settings=ServeSettings(access_log=False, request_timeout_s={REQUEST_TIMEOUT_S}))")
    log_path = warehouse.parent / "gunicorn.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", script, str(warehouse), str(port)], stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 30
        while _exchange(port, b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n", quiet=True)[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        yield port, proc.pid        # run_server execs gunicorn in this process
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def port(gunicorn) -> int:
    return gunicorn[0]


def _exchange(port: int, raw: bytes, quiet: bool = False, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send ``raw`` bytes, read one response (or until close); (status, JSON body, headers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(raw)
            return _read_response(sock)
    except OSError:
        if quiet:
            return 0, {}, b""
        raise


def _read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body), head


def _assert_json_error(answer: tuple[int, dict, bytes], status: int, code: str) -> None:
    assert answer[0] == status and answer[1]["error"]["code"] == code and answer[1]["error"]["message"], answer


def test_an_over_long_user_id_is_the_apps_json_400(port):
    raw = b"GET /v1/users/" + b"u" * 5000 + b"/recommendations HTTP/1.1\r\nHost: t\r\n\r\n"
    _assert_json_error(_exchange(port, raw), 400, "invalid_user_id")


def test_a_request_line_over_gunicorns_limit_is_a_json_414(port):
    raw = b"GET /v1/users/" + b"u" * 9000 + b"/recommendations HTTP/1.1\r\nHost: t\r\n\r\n"
    _assert_json_error(_exchange(port, raw), 414, "uri_too_long")


@pytest.mark.parametrize("headers", [b"".join(b"X-H%d: 1\r\n" % i for i in range(101)),   # over 100 headers
                                     b"X-Long: " + b"x" * 9000 + b"\r\n"])                   # a header over 8190 B
def test_header_limits_are_json_431(port, headers):
    _assert_json_error(_exchange(port, b"GET /health HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"), 431,
                       "request_header_fields_too_large")


def test_a_malformed_request_is_a_json_400(port):
    _assert_json_error(_exchange(port, b"GET /health HTTP/9.9\r\nHost: t\r\n\r\n"), 400, "bad_request")


@pytest.mark.parametrize("chunked", [False, True])
def test_an_over_large_body_is_a_json_413(port, chunked):
    body = b"[" + b" " * 300_000 + b"]"
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n\r\n"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                           for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
    else:
        framing, payload = b"Content-Length: %d\r\n\r\n" % len(body), body
    raw = b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + framing + payload
    _assert_json_error(_exchange(port, raw), 413, "request_entity_too_large")


def _timed(port: int, path: str) -> float:
    started = time.perf_counter()
    status = _exchange(port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), timeout=5)[0]
    assert status == 200
    return time.perf_counter() - started


def test_stalled_clients_do_not_keep_health_or_lookups_waiting(port):
    stalled = []
    try:
        for _ in range(STALLED):        # headers and 1 byte of a declared 1,000-byte body, then nothing
            sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S + 5)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n[")
            stalled.append(sock)
        time.sleep(0.3)                 # every stalled request is inside a worker, reading its body
        slowest = max(max(_timed(port, "/health"), _timed(port, "/v1/users/U1/recommendations?k=2"))
                      for _ in range(20))
        assert slowest < LATENCY_BOUND_S, f"{slowest * 1000:.0f} ms with {STALLED} stalled clients"
        started = time.monotonic()
        for sock in stalled:            # and they are cut off after serve.request_timeout_s, with a JSON 408
            _assert_json_error(_read_response(sock), 408, "request_timeout")
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + 2
    finally:
        for sock in stalled:
            sock.close()


def _established_per_worker(master: int, port: int) -> list[int]:
    """How many connections to ``port`` each worker holds, from its socket fds and ``/proc/net/tcp``."""
    local = f"0100007F:{port:04X}"
    established = {fields[9] for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
                   if fields[1] == local and fields[3] == "01"}
    workers = [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    return sorted(sum(_socket_inode(pid, fd) in established for fd in os.listdir(f"/proc/{pid}/fd"))
                  for pid in workers)


def _socket_inode(pid: int, fd: str) -> str | None:
    """The inode of a worker's socket fd; None when the fd closed between the listing and the read."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]")
    except FileNotFoundError:
        return None


def test_keep_alive_connections_are_spread_evenly_over_the_workers(gunicorn):
    """Left to whichever worker wakes first, 4/4 is the exception. Balanced, it is the rule, but not a law: a less
    loaded worker that is busy longer than the balancer's patience (a Spark test on the other core) lets the loaded
    one take the connection (3/5 seen once in a full parallel suite). So: most rounds 4/4, none worse than 3/5.
    A worker only counts once it has beaten (``recsys.serve.balance``): right after start-up one may not have yet."""
    port, master = gunicorn
    splits = []
    for _ in range(5):
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
        try:
            for sock in clients:        # answered: accepted by a worker, and kept open
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert _read_response(sock)[0] == 200
            splits.append(_established_per_worker(master, port))
        finally:
            for sock in clients:
                sock.close()
        deadline = time.monotonic() + 5
        while sum(_established_per_worker(master, port)) and time.monotonic() < deadline:
            time.sleep(0.05)
    settled = splits[1:]                # the first round may come before a just-booted worker's first heartbeat
    assert settled.count([4, 4]) >= 3 and all(split in ([4, 4], [3, 5]) for split in settled), splits
