"""The front door's per-request context variables that telemetry sets and reads."""

from __future__ import annotations

from contextvars import ContextVar

# The W3C traceparent of the front door's span while tracing is on ("" otherwise): the front door puts it on the
# call context, so the engine's spans join the front door's trace (across the gRPC hop too).
TRACE_PARENT: ContextVar[str] = ContextVar("tollgate_trace_parent", default="")
# Set when an engine took the call (in this process, or across the hop): the front door's own access-log line is
# then left to the engine's, which knows the usage.
ENGINE_TOOK_CALL: ContextVar[bool] = ContextVar("tollgate_engine_took_call", default=False)
