"""Least-connections accepting across workers (recsys.serve.balance), with the workers played by servers of one
gevent loop on one listening socket, each with its own slot of one table: the loaded one leaves a connection to the
least loaded live one, for a while only, and never to one that stopped beating."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent import socket

from recsys.serve import balance
from recsys.serve.balance import BalancedServer, ConnectionTable


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


def _hold(sock, _address) -> None:
    """A keep-alive connection: held until the client closes it."""
    sock.recv(1)


def _servers(listener, table: ConnectionTable, slots: list[int]) -> list[BalancedServer]:
    servers = [BalancedServer(listener, table, slot, handle=_hold) for slot in slots]
    for server in servers:
        server.start()
    return servers


def _connect(listener) -> socket.socket:
    return socket.create_connection(listener.getsockname())


def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.005)
    return True


def test_connections_are_spread_evenly_and_counted_until_closed(listener):
    table = ConnectionTable()
    slots = [table.claim(), table.claim()]
    servers = _servers(listener, table, slots)
    clients = []
    try:
        for opened in range(1, 9):      # one at a time: the loop always offers it to the same server first
            clients.append(_connect(listener))
            assert _until(lambda: sum(table.open[s] for s in slots) == opened, 2.0)
        assert [table.open[s] for s in slots] == [4, 4]
    finally:
        for client in clients:
            client.close()
        assert _until(lambda: all(table.open[s] == 0 for s in slots), 2.0)
        for server in servers:
            server.close()


def test_a_live_worker_with_fewer_connections_gets_a_new_one_for_a_while_only(listener, monkeypatch):
    monkeypatch.setattr(balance, "PATIENCE_S", 0.3)
    table = ConnectionTable()
    slot, idle = table.claim(), table.claim()    # idle: alive, no connections, not accepting (busy elsewhere)
    (server,) = _servers(listener, table, [slot])
    clients = [_connect(listener)]
    try:
        assert _until(lambda: table.open[slot] == 1, 2.0)          # a tie: taken at once
        clients.append(_connect(listener))
        gevent.sleep(0.15)
        assert table.open[slot] == 1                                 # left to the idle worker ...
        assert _until(lambda: table.open[slot] == 2, 2.0)          # ... then taken anyway
    finally:
        for client in clients:
            client.close()
        server.close()


def test_a_worker_that_stopped_beating_is_not_waited_for(listener, monkeypatch):
    monkeypatch.setattr(balance, "PATIENCE_S", 5.0)
    table = ConnectionTable()
    slot, gone = table.claim(), table.claim()
    table.release(gone)
    (server,) = _servers(listener, table, [slot])
    clients = []
    try:
        for opened in (1, 2):
            clients.append(_connect(listener))
            assert _until(lambda: table.open[slot] == opened, 1.0)
    finally:
        for client in clients:
            client.close()
        server.close()


def test_a_slot_is_claimed_once_until_its_worker_stops_beating():
    table = ConnectionTable()
    first, second = table.claim(), table.claim()
    assert first != second
    table.release(first)
    assert table.claim() == first
