"""Per-request control of the cache, read from the request's headers (HTTP headers, or gRPC metadata).

- `Cache-Control: no-store`: bypass the cache (no lookup, nothing stored);
- `Cache-Control: no-cache`: refresh (no lookup; the fresh answer is stored);
- `x-tollgate-cache: force`: cache this request even though it is not deterministic (temperature is not 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tollgate.gateway.v1 import gateway_pb2 as pb

# The cache's status on every answer of a model that caches (hit, miss or bypass), and the request headers that
# control the cache, which a split front door must pass on to the engine.
CACHE_STATUS_HEADER = "x-tollgate-cache"
CACHE_REQUEST_HEADERS = ("cache-control", CACHE_STATUS_HEADER)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """What the request asked of the cache."""

    no_store: bool = False
    no_cache: bool = False
    force: bool = False


def read_control(headers: Mapping[str, str]) -> CacheControl:
    """The request's cache directives; unknown ones are ignored, as HTTP caches do."""
    raw = headers.get("cache-control", "")
    directives = {part.split("=", 1)[0].strip().lower() for part in raw.split(",")} if raw else set()
    force = headers.get(CACHE_STATUS_HEADER, "").strip().lower() == "force"
    return CacheControl("no-store" in directives, "no-cache" in directives, force)


def deterministic(params: pb.ChatCompletionParams) -> bool:
    """Whether the request would get the same answer again: temperature 0 (unset means OpenAI's default of 1)."""
    return params.HasField("temperature") and params.temperature == 0
