"""Who is on the other end: the client's IP address, for per-IP rate limits, the audit log and API keys.

Behind a load balancer every request comes from the balancer's address; the client's is in X-Forwarded-For,
which each proxy extends with the address it received the request from. Anyone can send that header, so it
is believed only as far as it was written by proxies we trust (TRUSTED_PROXIES, a list of networks):

- the peer (REMOTE_ADDR) is not a trusted proxy: the header is ignored, the peer is the client;
- otherwise the header is read from the right, skipping trusted proxies; the first address that is not one is
  the client (entries further left were written by the client itself and prove nothing).

One function for Django requests (client_ip), one for ASGI scopes (ClientAddressMiddleware rewrites the scope's
client, so REMOTE_ADDR, websocket consumers and third-party code all see the same address).
"""

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from typing import Any

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def trusted_networks() -> tuple[IPNetwork, ...]:
    return _networks(tuple(settings.TRUSTED_PROXIES))


def parse_ip(value: str | None) -> IPAddress | None:
    """An address as proxies write it ("203.0.113.7", "[2001:db8::1]:443", "203.0.113.7:5123"), or None."""
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def resolve_client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address from the peer's and the X-Forwarded-For header it sent (see the module's doc)."""
    address = parse_ip(peer)
    if address is None:
        return None
    networks = trusted_networks()
    if not forwarded_for or not networks or not _trusted(address, networks):
        return str(address)
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_ip(hop)
        if hop_address is None:
            break  # not written by a proxy we trust: the last trusted hop is as far as we can see
        address = hop_address
        if not _trusted(address, networks):
            break
    return str(address)


def client_ip(request: Any) -> str | None:
    """The client's IP address of a Django request (None when the server did not say)."""
    meta = request.META
    return resolve_client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ClientAddressMiddleware:
    """Sets an HTTP or websocket scope's client to the resolved client address (the port is kept only when the
    peer is the client), so that everything downstream reads the same address as client_ip()."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            forwarded = b",".join(v for k, v in scope.get("headers", []) if k.lower() == b"x-forwarded-for")
            resolved = resolve_client_ip(client[0], forwarded.decode("latin-1") if forwarded else None)
            if resolved is not None and resolved != client[0]:
                scope = {**scope, "client": [resolved, 0]}
        await self.app(scope, receive, send)
