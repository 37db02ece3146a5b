"""Who sent a request, for the per-client event budget and the loopback rule of ``/metrics``.

The peer address, unless the peer is a proxy of ``serve.trusted_proxies``: then the rightmost address of
``X-Forwarded-For`` that is not a trusted proxy. Each proxy appends the address it received the request from, so the
hops right of the first untrusted one were written by trusted proxies and that one is the client as they saw it;
whatever lies further left came with the request and is never believed. A peer that is no trusted proxy is the
client whatever its ``X-Forwarded-For`` says, so a client cannot spoof a fresh address per request for a fresh budget.
A hop that is no plain IP address (a misconfigured proxy passing a client's text on) counts as the nearest trusted
hop right of it: such clients share that proxy's budget rather than naming their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

FORWARDED_FOR = "X-Forwarded-For"

Network = IPv4Network | IPv6Network


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as IPv4), or None when it is none."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, IPv6Address) else address


class ClientAddress:
    """The client of a request from its peer address and ``X-Forwarded-For`` headers (module docstring)."""

    def __init__(self, trusted_proxies: Sequence[Network]):
        self._trusted = tuple(trusted_proxies)

    def _trusts(self, address: IPv4Address | IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self._trusted)

    def __call__(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address; ``forwarded_for`` holds every ``X-Forwarded-For`` header of the request in order."""
        nearest = _address(peer)
        if not self._trusts(nearest):
            return peer
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            nearest = address
            if not self._trusts(address):
                break
        return str(nearest)
