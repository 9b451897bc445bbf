"""`Resolver`: a backend host's addresses, looked up once per `ttl` and shared by every connection opened meanwhile.

`loop.create_connection` with a host name asks the system's resolver in a thread for every new connection; a burst
of new connections to one backend (a cold pool, a restart, a spike past the idle connections) would queue that many
look-ups on the default executor's few threads. One look-up at a time per name is made here and its answer kept for
`ttl` seconds (aiohttp's client kept them 300 s too); a failed connection forgets the name's addresses, so a backend
that moved is looked up again at once. IP literals need no look-up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

__all__ = ["Address", "Lookup", "Resolver"]

Address = tuple[str, int]  # an IP literal and a port, as `create_connection` takes them
Lookup = Callable[[str, int], Awaitable[list[Address]]]


async def _system_lookup(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[Address] = []
    for _family, _kind, _proto, _name, sockaddr in infos:
        address = (str(sockaddr[0]), int(sockaddr[1]))
        if address not in seen:
            seen.append(address)
    return seen


class Resolver:
    """Addresses by (host, port), cached for `ttl` seconds; concurrent look-ups of one name share one."""

    def __init__(self, ttl: float = 300.0, lookup: Lookup = _system_lookup) -> None:
        self._ttl = ttl
        self._lookup = lookup
        self._known: dict[Address, tuple[float, list[Address]]] = {}
        self._pending: dict[Address, asyncio.Future[list[Address]]] = {}

    async def addresses(self, host: str, port: int) -> list[Address]:
        """Where `host` is: itself if it is an IP literal, else its addresses (raises `OSError` when it has none)."""
        if _is_ip(host):
            return [(host, port)]
        key = (host, port)
        loop = asyncio.get_running_loop()
        known = self._known.get(key)
        if known is not None and known[0] > loop.time():
            return known[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._look_up(key))
            pending.add_done_callback(_retrieved)  # every caller may have given up on a look-up that then failed
        return await asyncio.shield(pending)  # a caller that gives up does not cancel the others' look-up

    def forget(self, host: str, port: int) -> None:
        """Look `host` up again next time (a connection to one of its addresses failed)."""
        self._known.pop((host, port), None)

    async def _look_up(self, key: Address) -> list[Address]:
        try:
            found = await self._lookup(*key)
            if not found:
                raise socket.gaierror(socket.EAI_NONAME, f"no address for {key[0]}")
            self._known[key] = (asyncio.get_running_loop().time() + self._ttl, found)
            return found
        finally:
            del self._pending[key]


def _retrieved(future: asyncio.Future[list[Address]]) -> None:
    if not future.cancelled():
        future.exception()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
