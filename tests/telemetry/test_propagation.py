"""The front door's traceparent crosses the gRPC hop as metadata, and a client's own `traceparent` forwarded to auth
(under the `tollgate-header-` prefix) never takes its place."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.engine.contract import TRACE_PARENT, CallContext
from gateway.engine.remote import call_metadata
from gateway.engine.servicer import HEADER_PREFIX, call_context

OURS = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CLIENTS = "00-11111111111111111111111111111111-2222222222222222-01"


class FakeServicerContext:
    """Just what `call_context` reads of a grpc.aio servicer context."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"


def test_the_front_doors_span_travels_and_the_clients_header_stays_a_header() -> None:
    ctx = CallContext(request_id="req_1", headers={"traceparent": CLIENTS})
    token = TRACE_PARENT.set(OURS)
    try:
        metadata = call_metadata(ctx, forward_headers=["traceparent"])
    finally:
        TRACE_PARENT.reset(token)
    assert ("traceparent", OURS) in metadata
    assert (HEADER_PREFIX + "traceparent", CLIENTS) in metadata
    engine_side = call_context(FakeServicerContext(metadata))  # type: ignore[arg-type]
    assert engine_side.trace_parent == OURS
    assert engine_side.headers["traceparent"] == CLIENTS  # auth still sees the client's header


def test_no_traceparent_is_sent_when_tracing_is_off() -> None:
    metadata = call_metadata(CallContext(request_id="req_1", headers={"traceparent": CLIENTS}))
    assert all(key != "traceparent" for key, _ in metadata)
    assert call_context(FakeServicerContext(metadata)).trace_parent == ""  # type: ignore[arg-type]
