"""Keeps outgoing requests (input downloads, callbacks, storage uploads) away from the server's
own network unless `--allow-private-networks` is given.

The check runs on the address actually connected to: names are resolved by `GuardedResolver`,
which drops every non-public address, so a public name that resolves to 127.0.0.1 is refused
too. aiohttp skips the resolver for literal IP addresses, so `check_literal_host` covers those,
and redirects are followed by hand so that every hop is checked again.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The local-use NAT64 prefix (RFC 8215) is translated inside the local network: never public.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
# IPv4-compatible addresses (::a.b.c.d) are deprecated, but some stacks still route them to IPv4.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def url_address(url: str) -> str:
    """A URL without its credentials, query string and fragment: where the file is, without
    what signs it. Deletion by URL compares these."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class BlockedAddress(OSError):
    """The destination is not a public address."""


def is_public(address: str) -> bool:
    """Whether an IP address is a public unicast address (IPv4-mapped, IPv4-compatible, NAT64 and
    6to4 forms are judged by the IPv4 address they carry)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _IPV4_COMPATIBLE:
            ip = ipaddress.IPv4Address(int(ip))
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    return ip.is_global and not ip.is_multicast


def check_literal_host(host: str) -> None:
    """Refuses a literal IP host that is not public (names are checked when resolved)."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    if not is_public(host.strip("[]")):
        raise BlockedAddress(f"{host} is not a public address")


class GuardedResolver(AbstractResolver):
    """A resolver that returns only public addresses, and fails when a name has none."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        resolved = await self._inner.resolve(host, port, family)
        allowed = [r for r in resolved if is_public(r["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves to a non-public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
