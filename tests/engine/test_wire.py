"""Split mode's metadata, field by field: what the front door writes the engine reads back the same, and what the
engine answers beside its messages the front door adopts. And the split front door loads no engine."""

from __future__ import annotations

import subprocess
import sys

from gateway.call import CallContext, CallReply
from gateway.config import Secret
from gateway.engine.wire import (
    HEADER_PREFIX,
    adopt,
    call_context,
    call_metadata,
    front_door_networks,
    reply_metadata,
)


def across(ctx: CallContext, forward: tuple[str, ...] = ()) -> CallContext:
    """`ctx` as the engine reads it after the hop."""
    return call_context(call_metadata(ctx, forward), peer="ipv4:10.0.0.1:4000")


def test_the_callers_own_request_id_travels_and_the_engine_makes_its_own() -> None:
    engine_side = across(CallContext(request_id="req_front", client_request_id="client-42"))
    assert engine_side.client_request_id == "client-42"
    assert engine_side.request_id.startswith("req_") and engine_side.request_id != "req_front"
    assert across(CallContext(request_id="r")).client_request_id == ""


def test_the_key_travels_as_a_secret() -> None:
    engine_side = across(CallContext(request_id="r", api_key=Secret("tgk_k1_secret")))
    assert engine_side.api_key is not None and engine_side.api_key.reveal() == "tgk_k1_secret"
    assert across(CallContext(request_id="r")).api_key is None


def test_the_clients_address_travels_else_the_hops_peer_stands() -> None:
    assert across(CallContext(request_id="r", peer="203.0.113.9")).peer == "203.0.113.9"
    assert across(CallContext(request_id="r")).peer == "ipv4:10.0.0.1:4000"


def test_the_clients_address_is_believed_only_from_a_front_doors_network() -> None:
    sent = call_metadata(CallContext(request_id="r", peer="203.0.113.9"))
    doors = front_door_networks(["10.0.0.0/8", "fd00::/8"])
    for peer in ("ipv4:10.0.0.1:4000", "ipv6:[fd00::7]:4000", "ipv6:[::ffff:10.1.2.3]:4000"):
        assert call_context(sent, peer=peer, front_doors=doors).peer == "203.0.113.9", peer
    for peer in ("ipv4:192.168.1.5:4000", "ipv6:[::1]:4000", "unix:/run/tollgate.sock", "ipv4:nonsense"):
        assert call_context(sent, peer=peer, front_doors=doors).peer == peer, "the hop's own peer stands"
    assert call_context(sent, peer="ipv4:192.168.1.5:4000").peer == "203.0.113.9", "no front doors named: anyone's"


def test_the_trace_parent_travels() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert across(CallContext(request_id="r", trace_parent=parent)).trace_parent == parent
    assert across(CallContext(request_id="r")).trace_parent == ""


def test_only_the_named_printable_headers_are_forwarded() -> None:
    headers = {"x-team": "ml", "cache-control": "no-store", "x-secret": "kept home", "x-bad": "caf\udce9"}
    metadata = call_metadata(CallContext(request_id="r", headers=headers), ("x-team", "cache-control", "x-bad"))
    assert (HEADER_PREFIX + "x-team", "ml") in metadata
    engine_side = call_context(metadata)
    assert engine_side.headers["x-team"] == "ml" and engine_side.headers["cache-control"] == "no-store"
    assert "x-secret" not in engine_side.headers and "x-bad" not in engine_side.headers


def test_the_grpc_deadline_becomes_the_calls_deadline() -> None:
    assert call_context((), deadline=2.5).deadline == 2.5
    assert call_context(()).deadline is None


def test_the_engines_reply_is_adopted_field_by_field() -> None:
    sent = CallReply(request_id="req_engine", upstream_seconds=0.0425)
    sent.headers.update({"x-ratelimit-remaining-requests": "9", "x-tollgate-cache": "hit"})
    front = CallContext(request_id="req_front")
    adopt(front.reply, reply_metadata(sent))
    assert front.reply.request_id == "req_engine"
    assert front.reply.upstream_seconds == 0.0425
    assert front.reply.headers == {"x-ratelimit-remaining-requests": "9", "x-tollgate-cache": "hit"}


def test_an_errors_reply_carries_no_upstream_time_and_nothing_else_is_adopted() -> None:
    sent = CallReply(request_id="req_engine", upstream_seconds=1.0, headers={"x-tollgate-cache": "miss"})
    front = CallContext(request_id="req_front")
    adopt(front.reply, (*reply_metadata(sent, upstream=False), ("tollgate-error-class", "UpstreamError")))
    assert (front.reply.request_id, front.reply.upstream_seconds) == ("req_engine", 0.0)
    assert front.reply.headers == {"x-tollgate-cache": "miss"}


def test_whether_the_engine_metered_the_call_is_adopted() -> None:
    for metered in (True, False):
        front = CallContext(request_id="req_front")
        adopt(front.reply, reply_metadata(CallReply(request_id="req_engine", metered=metered), upstream=False))
        assert front.reply.metered is metered


def test_the_split_front_door_loads_no_engine() -> None:
    code = (
        "import sys\n"
        "import gateway.cli, gateway.engine.remote, gateway.frontdoor.app, gateway.telemetry.build\n"
        "loaded = [m for m in sys.modules if m.startswith(('gateway.engine.core', 'gateway.providers', "
        "'gateway.auth', 'gateway.ratelimit', 'gateway.stats', 'gateway.assemble'))]\n"
        "print(sorted(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
