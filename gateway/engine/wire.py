"""Split mode on the wire: what crosses the gRPC hop between a front door and its engine, besides the messages.

One module for both ends, so each field is written and read in one place:
- a call's context goes as request metadata (`call_metadata` at the front door, `call_context` at the engine): the
  caller's own id, the key, the client's address, the front door's traceparent and the headers auth and routing
  read (under `tollgate-header-`, so a client's header can never pose as ours);
- the engine's reply goes back as initial metadata (a stream's, at its first chunk), in the first message of a
  stream in batches (`StreamChatCompletionBatchesResponse.reply_metadata`), or as trailing metadata
  (`reply_metadata`, read back by `adopt`): its request id, its time upstream and the answer's headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from gateway.call import CallContext, CallReply, new_request_id
from gateway.headers import api_key, client_request_id, printable

UPSTREAM_MS = "tollgate-upstream-ms"
METERED = "tollgate-metered"  # present when the engine metered the call (`CallReply.metered`)
# A split front door passes its client's address, and the HTTP headers auth wants, under these names.
CLIENT_ADDRESS = "tollgate-client-address"
HEADER_PREFIX = "tollgate-header-"
REQUEST_ID = "x-request-id"
TRACE_PARENT = "traceparent"
# The answer headers an engine sends back, by prefix: the limits' `x-ratelimit-*` and the cache's `x-tollgate-cache`.
_ANSWER_HEADERS = ("x-ratelimit-", "x-tollgate-")

Metadata = tuple[tuple[str, str], ...]


def call_metadata(ctx: CallContext, forward_headers: Sequence[str] = ()) -> Metadata:
    """The call context as metadata: request id, key, the client's address and the headers auth is to see."""
    # The engine makes its own request id (see `CallContext`); the caller's own id travels for correlation.
    md = [(REQUEST_ID, ctx.client_request_id)] if ctx.client_request_id else []
    if ctx.trace_parent:
        md.append((TRACE_PARENT, ctx.trace_parent))
    if ctx.api_key is not None:
        md.append(("authorization", f"Bearer {ctx.api_key.reveal()}"))
    if ctx.peer:
        md.append((CLIENT_ADDRESS, ctx.peer))
    for name in forward_headers:
        value = ctx.headers.get(name)
        if value is not None and printable(value):  # gRPC refuses anything else in a text metadata value
            md.append((HEADER_PREFIX + name, value))
    return tuple(md)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def call_context(
    pairs: Iterable[tuple[str, str | bytes]],
    peer: str = "",
    deadline: float | None = None,
    front_doors: Sequence[Network] = (),
) -> CallContext:
    """The call context from a call's metadata; the key is kept as a `Secret` so it never prints. The client's
    address a front door passes is believed from a `peer` in `front_doors` (any peer when there are none)."""
    metadata: dict[str, str] = {}
    forwarded: dict[str, str] = {}
    for k, v in pairs:
        if isinstance(v, str):
            if k.startswith(HEADER_PREFIX):
                forwarded[k[len(HEADER_PREFIX) :]] = v
            else:
                metadata[k] = v
    return CallContext(
        request_id=new_request_id(),
        client_request_id=client_request_id(metadata.get(REQUEST_ID)),
        api_key=api_key(metadata),
        peer=(metadata.get(CLIENT_ADDRESS) if _believed(peer, front_doors) else None) or peer,
        headers={**metadata, **forwarded} if forwarded else metadata,
        deadline=deadline,
        trace_parent=metadata.get(TRACE_PARENT, ""),  # the caller's span, never a forwarded client header
    )


def reply_metadata(reply: CallReply, *, upstream: bool = True) -> Metadata:
    """The engine's request id and the answer's headers (and its time upstream) for the caller to show, and
    whether the engine metered the call."""
    identity = ((REQUEST_ID, reply.request_id), *reply.headers.items())
    if reply.metered:
        identity = ((METERED, "1"), *identity)
    return ((UPSTREAM_MS, f"{reply.upstream_seconds * 1000:.3f}"), *identity) if upstream else identity


def adopt(reply: CallReply, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
    """Take the engine's request id (the client sees that one), its time upstream, the answer's headers and whether
    it metered the call."""
    for key, value in metadata or ():
        if key == UPSTREAM_MS:
            reply.upstream_seconds = float(value) / 1000
        elif key == METERED:
            reply.metered = True
        elif key == REQUEST_ID:
            reply.request_id = str(value)
        elif key.startswith(_ANSWER_HEADERS):
            reply.headers[key] = str(value)


def front_door_networks(front_doors: Iterable[str]) -> tuple[Network, ...]:
    """The configured `listen.front_doors`, as networks."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in front_doors)


def _believed(peer: str, front_doors: Sequence[Network]) -> bool:
    """Whether the gRPC `peer` (`ipv4:10.0.0.7:51234`, `ipv6:[::1]:51234`) calls from a front door's network."""
    if not front_doors:
        return True
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return False  # a Unix socket or an unknown transport: no address to check
    host = rest.rpartition(":")[0].strip("[]").partition("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in front_doors)
