"""The front door's traceparent crosses the gRPC hop as metadata, and a client's own `traceparent` forwarded to auth
(under the `tollgate-header-` prefix) never takes its place."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.call import CallContext
from gateway.engine.servicer import context_of
from gateway.engine.wire import HEADER_PREFIX, call_metadata

OURS = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CLIENTS = "00-11111111111111111111111111111111-2222222222222222-01"


class FakeServicerContext:
    """Just what `context_of` reads of a grpc.aio servicer context."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def time_remaining(self) -> float | None:
        return None


def test_the_front_doors_span_travels_and_the_clients_header_stays_a_header() -> None:
    ctx = CallContext(request_id="req_1", headers={"traceparent": CLIENTS}, trace_parent=OURS)
    metadata = call_metadata(ctx, forward_headers=["traceparent"])
    assert ("traceparent", OURS) in metadata
    assert (HEADER_PREFIX + "traceparent", CLIENTS) in metadata
    engine_side = context_of(FakeServicerContext(metadata))  # type: ignore[arg-type]
    assert engine_side.trace_parent == OURS
    assert engine_side.headers["traceparent"] == CLIENTS  # auth still sees the client's header


def test_no_traceparent_is_sent_when_tracing_is_off() -> None:
    metadata = call_metadata(CallContext(request_id="req_1", headers={"traceparent": CLIENTS}))
    assert all(key != "traceparent" for key, _ in metadata)
    assert context_of(FakeServicerContext(metadata)).trace_parent == ""  # type: ignore[arg-type]
