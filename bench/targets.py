"""The bench's targets: what each one is, the processes behind it, and starting them all.

- `direct`: the fake upstream itself; `floor`: a bare aiohttp passthrough proxy (bench.floor_proxy);
- `tollgate`: `tollgate serve`; `limits` / `limits-redis`: the same plus limits on every request, in memory / in Redis
  (bench.limits); `secured`: the same plus real auth and stats servers (bench.secured);
- `cache` / `cache-redis`: the same with the response cache on, every request a hit, from memory / from Redis
  (bench.cache);
- `split`: `tollgate engine` + `tollgate frontdoor`, over gRPC;
- `anthropic`: `tollgate serve` translating the same OpenAI requests to a fake Anthropic backend
  (gateway.testing.fake_anthropic), so its CPU against `tollgate`'s is the translation's cost.
- `telemetry-off` / `tracing`: `tollgate serve` with metrics and the access log off / every request traced
  (bench.telemetry);
- `responses-direct` / `responses`: the Responses API (`POST /responses`), to the fake upstream itself / through
  `tollgate serve` with the `tollgate` target's configuration (an OpenAI backend: the Responses API passed through).

Every gateway gets the same configuration as the `tollgate` target plus its own section, so their figures differ by
that section alone. Every process is started at once and waited for afterwards, so they start in parallel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import cache, limits, secured, telemetry
from bench.figures import LIMIT_HEADER
from bench.load import Endpoint, request_headers
from bench.procs import GRPC_READY, HTTP_READY, URL_READY, Service, start_service

__all__ = ["ALL_TARGETS", "MODEL", "Target", "start_targets", "tollgate_config"]

ALL_TARGETS = (
    "direct",
    "floor",
    "tollgate",
    "limits",
    "limits-redis",
    "cache",
    "cache-redis",
    "secured",
    "split",
    "anthropic",
    *telemetry.TARGETS,
    "responses-direct",
    "responses",
)
MODEL = "gpt-4o-mini"
_REPO = Path(__file__).resolve().parents[1]
_HOST = "127.0.0.1"
_GATEWAY = ("-m", "gateway")
_LISTEN = ("--http", f"{_HOST}:0", "--grpc", f"{_HOST}:0")
_REDIS_SERVER = "redis-server"


@dataclass
class Target:
    """Where the load goes with which key, which processes' CPU count as the gateway's, and which are reported apart."""

    name: str
    base_url: str
    services: list[Service] = field(default_factory=list)
    api_key: str = "bench"  # any key will do where nothing checks it
    side_services: list[Service] = field(default_factory=list)  # servers the gateway calls: authsvc, statssvc
    accounting: secured.Accounting | None = None  # counts what was sent, to wait for (and check) its usage records
    # Processes the gateway calls that the bench did not start (a local redis-server), name -> PID: CPU read only.
    external: dict[str, int] = field(default_factory=dict)
    sample_header: str | None = None  # a response header the load generator notes on the first answers of each run
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request, besides the key
    warmup_headers: dict[str, str] = field(default_factory=dict)  # and with every warm-up request
    api: str = "chat"  # which API the load speaks: "chat" or "responses"
    grpc_address: str = ""  # split: the engine's gRPC address, for a gRPC client of its own (bench.grpc_direct)

    @property
    def endpoint(self) -> Endpoint:
        headers = {**request_headers(self.api_key), **self.headers}
        path = "/responses" if self.api == "responses" else "/chat/completions"
        return Endpoint(f"{self.base_url}{path}", headers, self.sample_header, self.api)

    @property
    def warmup_endpoint(self) -> Endpoint:
        endpoint = self.endpoint
        headers = {**endpoint.headers, **self.warmup_headers}
        return Endpoint(endpoint.url, headers, endpoint.sample_header, endpoint.api)


_Pending = tuple[Target, Service, str]  # a target, its first process, and the log line that says it is ready


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _write_config(log_dir: Path, name: str, config: dict[str, Any]) -> Path:
    path = log_dir / f"{name}.yaml"
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))  # JSON is YAML
    return path


def _serve(target: Target, config_path: Path, log_dir: Path) -> _Pending:
    """`tollgate serve` on the configuration file `config_path`, started."""
    argv = _python(*_GATEWAY, "serve", "--config", str(config_path), *_LISTEN)
    return target, start_service(target.name, argv, log_dir, _REPO), HTTP_READY


def start_targets(
    wanted: Sequence[str], chunks: int, log_dir: Path, services: list[Service], store: limits.BenchRedis | None = None
) -> tuple[Service, list[Target]]:
    """Start the upstream and every wanted target; every service started is appended to `services` at once.

    `limits-redis` and `cache-redis` are started only with a `store` (a Redis that answered).
    """
    fake = ("-m", "gateway.testing.fake_openai", "--host", _HOST, "--port", "0", "--chunks", str(chunks))
    upstream = start_service("upstream", _python(*fake, "--chunk-delay", "0", "--latency", "0"), log_dir, _REPO)
    services.append(upstream)
    side = secured.start_side_servers(log_dir, _REPO, services) if "secured" in wanted else None
    base = upstream.wait_for(URL_READY)[1]
    config = tollgate_config(base)
    config_path = _write_config(log_dir, "tollgate", config)
    pending: list[_Pending] = []
    if "floor" in wanted:
        argv = _python("-m", "bench.floor_proxy", "--upstream", base, "--host", _HOST, "--port", "0")
        pending.append((Target("floor", ""), start_service("floor", argv, log_dir, _REPO), URL_READY))
    plain = (Target("tollgate", ""), Target("responses", "", api="responses"))  # one config, two APIs
    pending += [_serve(target, config_path, log_dir) for target in plain if target.name in wanted]
    if "limits" in wanted:
        limits_path = _write_config(log_dir, "limits", limits.limits_config(config, MODEL))
        pending.append(_serve(Target("limits", "", sample_header=LIMIT_HEADER), limits_path, log_dir))
    if "limits-redis" in wanted and store is not None:
        pending.append(_start_limits_redis(store, config, log_dir))
    for name, cache_store in (("cache", None), ("cache-redis", store)):
        if name in wanted and (cache_store is not None or name == "cache"):
            target = Target(
                name,
                "",
                headers=cache.CACHE_HEADERS,
                warmup_headers=cache.WARMUP_HEADERS,
                sample_header="x-tollgate-cache",
            )
            path = _write_config(log_dir, name, cache.cache_config(config, MODEL, cache_store))
            pending.append(_serve(target, path, log_dir))
    if side is not None:
        pending.append(_start_secured(side, config, log_dir))
    for name, make in zip(telemetry.TARGETS, (telemetry.telemetry_off_config, telemetry.tracing_config), strict=True):
        if name in wanted:
            pending.append(_serve(Target(name, ""), _write_config(log_dir, name, make(config)), log_dir))
    if "split" in wanted:
        argv = _python(*_GATEWAY, "engine", "--config", str(config_path), "--grpc", f"{_HOST}:0")
        pending.append((Target("split", ""), start_service("split-engine", argv, log_dir, _REPO), GRPC_READY))
    if "anthropic" in wanted:
        pending.append(_start_translated(chunks, log_dir, services))
    services += [service for _, service, _ in pending]
    targets = _direct_targets(wanted, base)
    targets += [_ready(pending_target, log_dir, services) for pending_target in pending]
    targets.sort(key=lambda target: ALL_TARGETS.index(target.name))
    return upstream, targets


def _direct_targets(wanted: Sequence[str], base: str) -> list[Target]:
    """The fake upstream itself, called with the chat API and with the Responses API."""
    direct = (Target("direct", base), Target("responses-direct", base, api="responses"))
    return [target for target in direct if target.name in wanted]


def _ready(pending: _Pending, log_dir: Path, services: list[Service]) -> Target:
    """Wait until a target's first process listens; split mode then starts its front door on the engine's port."""
    target, service, ready = pending
    found = service.wait_for(ready)[1]
    target.services.insert(0, service)
    if target.name == "floor":
        target.base_url = found
    elif target.name == "split":
        target.grpc_address = f"{_HOST}:{found}"
        argv = _python(*_GATEWAY, "frontdoor", "--config", str(log_dir / "tollgate.yaml"), "--http", f"{_HOST}:0")
        frontdoor = start_service("split-frontdoor", [*argv, "--engine", f"{_HOST}:{found}"], log_dir, _REPO)
        services.append(frontdoor)
        target.services.append(frontdoor)
        target.base_url = f"http://{_HOST}:{frontdoor.wait_for(HTTP_READY)[1]}/v1"
    else:
        target.base_url = f"http://{_HOST}:{found}/v1"
    return target


def _start_limits_redis(store: limits.BenchRedis, config: dict[str, Any], log_dir: Path) -> _Pending:
    """`tollgate serve` with limits in `store`; a local redis-server's CPU is read (and reported) apart."""
    pid = store.local_pid()
    target = Target(
        "limits-redis",
        "",
        external={} if pid is None else {_REDIS_SERVER: pid},
        sample_header=LIMIT_HEADER,
    )
    return _serve(target, _write_config(log_dir, target.name, limits.limits_config(config, MODEL, store)), log_dir)


def _start_secured(side: secured.SideServers, config: dict[str, Any], log_dir: Path) -> _Pending:
    """`tollgate serve` with the `tollgate` target's configuration plus the auth and stats servers, once they listen."""
    auth_port, stats_port = side.wait()
    target = Target(
        "secured",
        "",
        api_key=side.api_key,
        side_services=[side.auth, side.stats],
        accounting=secured.Accounting(side.db_path, f"{_HOST}:{stats_port}", _REPO),
    )
    full = secured.secured_config(config, auth_port, stats_port, log_dir / "spool")
    return _serve(target, _write_config(log_dir, target.name, full), log_dir)


def _start_translated(chunks: int, log_dir: Path, services: list[Service]) -> _Pending:
    """`tollgate serve` in front of a fake Anthropic upstream of its own (its CPU is not the gateway's)."""
    fake = ("-m", "gateway.testing.fake_anthropic", "--host", _HOST, "--port", "0", "--chunks", str(chunks))
    upstream = start_service("anthropic-upstream", _python(*fake), log_dir, _REPO)
    services.append(upstream)
    config = tollgate_config(upstream.wait_for(URL_READY)[1])
    config["backends"][0]["provider"] = "anthropic"
    return _serve(Target("anthropic", ""), _write_config(log_dir, "anthropic", config), log_dir)


def tollgate_config(upstream_base: str) -> dict[str, Any]:
    """The `tollgate` target's configuration: no auth, one backend (the fake upstream), the bench's model."""
    return {
        "listen": {"http": f"{_HOST}:0", "grpc": f"{_HOST}:0"},
        "auth": "none",
        "backends": [
            {
                "name": "up",
                "provider": "openai",
                "base_url": upstream_base,
                "api_key": "bench",
                "max_connections": 200,
            }
        ],
        "models": [{"name": MODEL, "targets": [{"backend": "up", "model": MODEL}]}],
    }
