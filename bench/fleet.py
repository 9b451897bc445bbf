"""The fleet run (`make fleet`): tollgate as platform teams run it, on loopback, and what clients see.

Started, each on free ports in one temp dir, every process stopped by its PID afterwards:
- a Redis Cluster (three primaries, three replicas; limits and the response cache's shared tier live there),
- the reference auth server (`tollgate authsvc`, two keys) and stats server (`tollgate statssvc`, SQLite),
- two fake OpenAI providers (a fast one, and a slow one for long streams),
- three `tollgate serve` replicas, and HAProxy in front, health-checking `/readyz`.

Then the scenarios run one after the other, each with plain and streamed traffic, and a table prints: requests,
client errors, usage records expected / stored / duplicated / resent, and what the limiter admitted against its
limit. A scenario whose own check failed (a replica on the wrong config after a reload) says so in its note and
fails the run.

    python -m bench.fleet [--quick] [--scenarios steady,limits,token-limits,reload,replica-killed,redis-killed,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.fleet_load import Outcome, Records, Traffic, count_records, run_traffic
from bench.procs import Service, start_service, stop_all
from gateway.config import parse_config
from gateway.config.digest import config_hash
from gateway.testing.redis_cluster import LocalRedisCluster, free_port, start_cluster

__all__ = ["SCENARIOS", "Fleet", "Row", "fleet", "main", "render"]

REPLICAS = 3
LIMITED_REQUESTS = 20  # the `limited` key: requests a minute
TOKEN_BUDGET = 600  # the `metered` key: tokens an hour
ADMIN_TOKEN = "fleet-admin-token"  # the replicas' admin API (reload)
_READY_TIMEOUT = 30.0
_TOLLGATE = [sys.executable, "-m", "gateway"]


@dataclass
class Fleet:
    """Everything the run started, and how to reach it."""

    root: Path
    cluster: LocalRedisCluster
    keys: dict[str, str]  # name → API key
    db: Path
    lb_url: str
    replica_ports: list[int]
    services: list[Service] = field(default_factory=list)
    replicas: dict[int, Service] = field(default_factory=dict)

    def start_replica(self, i: int) -> None:
        """Start replica `i` (again) on its own port and wait until it is ready."""
        config = self.root / f"replica{i}.yaml"
        argv = [*_TOLLGATE, "serve", "--config", str(config), "--http", f"127.0.0.1:{self.replica_ports[i]}"]
        argv += ["--grpc", f"127.0.0.1:{free_port()}"]
        service = start_service(f"replica{i}", argv, self.root / "logs")
        self.replicas[i] = service
        self.services.append(service)
        wait_ready(f"http://127.0.0.1:{self.replica_ports[i]}/readyz", service)

    def signal_replica(self, i: int, signum: signal.Signals) -> float:
        """Send `signum` to replica `i` and wait for it to exit; how long it took."""
        service = self.replicas[i]
        assert service.proc is not None
        started = time.monotonic()
        service.proc.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.wait(timeout=30)
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
        service.proc = None
        return time.monotonic() - started

    def replica_url(self, i: int, path: str) -> str:
        """Replica `i` itself, past the load balancer."""
        return f"http://127.0.0.1:{self.replica_ports[i]}{path}"

    def config_hashes(self) -> list[str]:
        """The config each replica serves, as its `/readyz` says."""
        hashes = []
        for i in range(REPLICAS):
            with urllib.request.urlopen(self.replica_url(i, "/readyz"), timeout=5) as response:
                hashes.append(str(json.loads(response.read())["config"]))
        return hashes

    def admin_reload(self, i: int) -> tuple[int, dict[str, object]]:
        """`POST /admin/reload` on replica `i`: its status and JSON body."""
        request = urllib.request.Request(
            self.replica_url(i, "/admin/reload"), method="POST", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    def wait_in_rotation(self, i: int) -> None:
        """Until HAProxy has seen replica `i` healthy again (its `rise` checks)."""
        time.sleep(_CHECK_INTERVAL * (_RISE + 1))


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    scenario: str
    requests: int
    client_errors: int
    records: Records
    admitted: str  # "20 / 20" for the limits scenarios, "" otherwise
    note: str = ""
    failed: str = ""  # the scenario's own check that did not hold (then the run fails), "" when all held


_CHECK_INTERVAL = 0.5
_RISE, _FALL = 2, 1


def haproxy_config(lb_port: int, replica_ports: list[int]) -> str:
    """What a platform team would run: health checks on /readyz, and connection failures retried on another
    replica (a request that never reached a gateway is safe to send again; one that did is not retried)."""
    servers = "\n".join(f"    server r{i} 127.0.0.1:{port} check" for i, port in enumerate(replica_ports))
    return f"""
global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
frontend fleet
    bind 127.0.0.1:{lb_port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {int(_CHECK_INTERVAL * 1000)}ms fall {_FALL} rise {_RISE}
{servers}
"""


def replica_config(fleet_root: Path, i: int, *, auth: str, stats: str, redis: str, providers: dict[str, str]) -> str:
    """Replica `i`'s config: shared auth, stats and Redis Cluster; its own spool."""
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
server: {{reload_poll: 500ms}}
admin: {{token: {ADMIN_TOKEN}}}
auth: {{server: "{auth}", timeout: 2s, cache_ttl: 30s}}
stats: {{server: "{stats}", flush_interval: 200ms, spool_dir: "{fleet_root / f"spool{i}"}"}}
redis: "{redis}"
limits:
  backend: redis
  on_redis_error: open
  redis_timeout: 500ms
  output_tokens_estimate: 16
  rules:
    - {{per: global, requests: 1000000, window: 1m}}
    - {{per: key, match: {{user: [limited, limited-again]}}, requests: {LIMITED_REQUESTS}, window: 1m}}
    - {{per: key, match: {{user: [metered]}}, tokens: {TOKEN_BUDGET}, window: 1h}}
backends:
  - {{name: fast, provider: openai, base_url: "{providers["fast"]}", api_key: sk-fleet, connect_timeout: 1s}}
  - {{name: slow, provider: openai, base_url: "{providers["slow"]}", api_key: sk-fleet, connect_timeout: 1s}}
models:
  - {{name: fast, targets: [{{backend: fast, model: gpt-4o-mini}}]}}
  - {{name: slow, targets: [{{backend: slow, model: gpt-4o-mini}}]}}
"""


def wait_ready(url: str, service: Service | None = None, timeout: float = _READY_TIMEOUT) -> None:
    """Until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        if service is not None and (service.proc is None or service.proc.poll() is not None):
            raise RuntimeError(f"{service.name} exited before it was ready:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout:.0f}s")
        time.sleep(0.05)


@contextlib.contextmanager
def fleet() -> Iterator[Fleet]:
    """Start the whole fleet in a temp dir; stop every process by PID and remove the dir afterwards."""
    if shutil.which("haproxy") is None:
        raise FileNotFoundError("haproxy is needed on PATH (Debian: apt-get install haproxy)")
    root = Path(tempfile.mkdtemp(prefix="tollgate-fleet-"))
    (root / "logs").mkdir()
    cluster = start_cluster()
    services: list[Service] = []
    running: Fleet | None = None
    try:
        running = _start(root, cluster, services)
        yield running
    finally:
        stop_all(running.services if running is not None else services)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _start(root: Path, cluster: LocalRedisCluster, services: list[Service]) -> Fleet:
    logs = root / "logs"
    providers = {}
    for name, options in (("fast", ["--chunks", "8"]), ("slow", ["--chunks", "20", "--chunk-delay", "0.1"])):
        port = free_port()
        argv = [sys.executable, "-m", "gateway.testing.fake_openai", "--port", str(port), *options]
        services.append(start_service(f"provider-{name}", argv, logs))
        services[-1].wait_for(r"listening")
        providers[name] = f"http://127.0.0.1:{port}/v1"
    keys_file = root / "keys.yaml"
    keys = {user: _add_key(keys_file, user) for user in ("steady", "limited", "limited-again", "metered")}
    auth, stats, db = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", root / "usage.db"
    services.append(start_service("authsvc", [*_TOLLGATE, "authsvc", "--keys", str(keys_file), "--listen", auth], logs))
    services.append(start_service("statssvc", [*_TOLLGATE, "statssvc", "--db", str(db), "--listen", stats], logs))
    services[-2].wait_for(r"listening")
    services[-1].wait_for(r"listening")
    replica_ports = [free_port() for _ in range(REPLICAS)]
    for i in range(REPLICAS):
        text = replica_config(root, i, auth=auth, stats=stats, redis=cluster.url, providers=providers)
        (root / f"replica{i}.yaml").write_text(text)
    lb_port = free_port()
    running = Fleet(root, cluster, keys, db, f"http://127.0.0.1:{lb_port}", replica_ports, services)
    for i in range(REPLICAS):
        running.start_replica(i)
    (root / "haproxy.cfg").write_text(haproxy_config(lb_port, replica_ports))
    services.append(start_service("haproxy", ["haproxy", "-db", "-f", str(root / "haproxy.cfg")], logs))
    wait_ready(f"{running.lb_url}/readyz", services[-1])
    return running


def _add_key(keys_file: Path, user: str) -> str:
    done = subprocess.run(
        [*_TOLLGATE, "keys", "add", "--file", str(keys_file), "--user", user],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------------ scenarios


def _row(name: str, fleet: Fleet, outcomes: list[Outcome], admitted: str = "", note: str = "", failed: str = "") -> Row:
    errors = [o for o in outcomes if o.error]
    return Row(name, len(outcomes), len(errors), count_records(fleet.db, outcomes), admitted, note, failed)


def _traffic(fleet: Fleet, quick: bool, **changes: object) -> Traffic:
    base = Traffic(fleet.lb_url, fleet.keys["steady"], total=60 if quick else 400, concurrency=4)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def steady(fleet: Fleet, quick: bool) -> Row:
    """Plain and streamed traffic, nothing happening."""
    outcomes = asyncio.run(run_traffic(_traffic(fleet, quick)))
    return _row("steady", fleet, outcomes)


def limits(fleet: Fleet, quick: bool) -> Row:
    """A key limited to N requests a minute: exactly N admitted, whichever replica each request reaches."""
    outcomes = asyncio.run(
        run_traffic(_traffic(fleet, quick, api_key=fleet.keys["limited"], total=2 * LIMITED_REQUESTS))
    )
    admitted = sum(1 for o in outcomes if o.status == 200)
    return _row("limits: requests/min", fleet, outcomes, f"{admitted} / {LIMITED_REQUESTS}")


def token_limits(fleet: Fleet, quick: bool) -> Row:
    """A key limited to T tokens an hour: admitted while the estimates fit, actual use within the overshoot."""
    traffic = _traffic(fleet, quick, api_key=fleet.keys["metered"], total=80, max_tokens=16)
    outcomes = asyncio.run(run_traffic(traffic))
    used = sum(o.tokens for o in outcomes if o.status == 200)
    admitted = sum(1 for o in outcomes if o.status == 200)
    return _row("limits: tokens/hour", fleet, outcomes, f"{used} / {TOKEN_BUDGET} tokens", f"{admitted} admitted")


def reload(fleet: Fleet, quick: bool) -> Row:
    """Under plain, streamed and long streamed traffic: a valid config change written to every replica's file (each
    replica's file watch picks it up, as from a Kubernetes ConfigMap), then an invalid one (refused by every replica,
    through its file watch and its admin API, the valid config serving on)."""
    problems: list[str] = []

    def incident() -> str:
        time.sleep(1.0)
        before = fleet.config_hashes()
        files = [fleet.root / f"replica{i}.yaml" for i in range(REPLICAS)]
        added = "models:\n  - {name: fast-b, targets: [{backend: fast, model: gpt-4o-mini}]}\n"
        new = [path.read_text().replace("models:\n", added) for path in files]
        # Each replica's own hash (their spools differ), as the gateway computes it.
        expected = [config_hash(parse_config(text, os.environ)) for text in new]
        for path, text in zip(files, new, strict=True):
            _replace_file(path, text)
        after = _settled(fleet, lambda hashes: hashes == expected)
        if after is None:
            problems.append(f"valid reload: replicas on {fleet.config_hashes()}, want {expected} (before {before})")
        time.sleep(1.0)
        for path, text in zip(files, new, strict=True):
            _replace_file(path, text.replace("{backend: fast, model: gpt-4o-mini}]}", "{backend: nowhere}]}", 1))
        refused = 0
        for i in range(REPLICAS):
            status, body = fleet.admin_reload(i)
            refused += status == 400 and "unknown backend 'nowhere'" in str(body)
        time.sleep(1.5)  # the file watches see it too
        still = fleet.config_hashes()
        if refused != REPLICAS or still != expected:
            problems.append(f"invalid reload: {refused}/{REPLICAS} refused, replicas on {still} (want {expected})")
        for path, text in zip(files, new, strict=True):
            _replace_file(path, text)  # what a restart reads
        moved = sum(a != b for a, b in zip(after or before, before, strict=True))
        return f"new config on {moved}/{REPLICAS} replicas; invalid one refused by {refused}/{REPLICAS}"

    outcomes, note = _under_load(fleet, quick, incident, seconds=4.0 if quick else 10.0, long_model="slow")
    row = _row("reload valid + invalid", fleet, outcomes, note=note, failed="; ".join(problems))
    # Six configs (each replica's old and new): every call recorded with the config it ran on.
    ran_on = ", ".join(str(n) for _, n in sorted(row.records.configs.items()))
    return dataclasses.replace(row, note=f"{note}; records by config: {ran_on}")


def _replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader never sees half a file), as a ConfigMap update does."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _settled(fleet: Fleet, done: Callable[[list[str]], bool], timeout: float = 15.0) -> list[str] | None:
    """The replicas' config hashes once `done` holds for them, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hashes = fleet.config_hashes()
        if done(hashes):
            return hashes
        time.sleep(0.1)
    return None


def replica_killed(fleet: Fleet, quick: bool) -> Row:
    """SIGKILL one replica under load; HAProxy routes around it; it comes back (and delivers its spool)."""

    def incident() -> str:
        time.sleep(1.0)
        fleet.signal_replica(1, signal.SIGKILL)
        time.sleep(1.5)
        fleet.start_replica(1)
        return "replica1 SIGKILLed, restarted"

    outcomes, note = _under_load(fleet, quick, incident, seconds=4.0 if quick else 10.0)
    return _row("replica killed", fleet, outcomes, note=note)


def redis_primary_killed(fleet: Fleet, quick: bool) -> Row:
    """SIGKILL the Redis primary holding the limit counters under load; `on_redis_error: open` meanwhile (no 5xx).
    Once its replica is promoted and every replica counts Redis as up again, a fresh key's limit is exact."""
    victim = fleet.cluster.primary_of("{tollgate:rl}:x")

    def incident() -> str:
        time.sleep(1.0)
        fleet.cluster.kill(victim)
        started = time.monotonic()
        fleet.cluster.wait_healthy()
        promoted = time.monotonic() - started
        fleet.cluster.revive(victim)
        return f"replica promoted in {promoted:.1f}s"

    outcomes, note = _under_load(fleet, quick, incident, seconds=6.0 if quick else 12.0)
    if not _limits_shared_again(fleet):
        return _row("redis primary killed", fleet, outcomes, note=note, failed="a replica's limiter stayed down")
    again = asyncio.run(
        run_traffic(_traffic(fleet, quick, api_key=fleet.keys["limited-again"], total=2 * LIMITED_REQUESTS))
    )
    admitted = sum(1 for o in again if o.status == 200)
    failed = f"{admitted} admitted after the promotion" if admitted != LIMITED_REQUESTS else ""
    return _row(
        "redis primary killed",
        fleet,
        outcomes + again,
        f"{admitted} / {LIMITED_REQUESTS} after promotion",
        note,
        failed,
    )


def _limits_shared_again(fleet: Fleet, timeout: float = 15.0) -> bool:
    """Wait until every replica's limiter counts Redis as up again (`tollgate_ratelimit_backend_down` 0), as an
    operator would before trusting the limits: a replica that saw Redis fail tries it again only when a limited
    request comes (one probe a second), and until then admits from its own memory (`fail_open`)."""
    deadline = time.monotonic() + timeout
    waiting = set(range(REPLICAS))
    while waiting and time.monotonic() < deadline:
        for i in sorted(waiting):
            if _metric(fleet.replica_url(i, "/metrics"), "tollgate_ratelimit_backend_down") == 0.0:
                waiting.discard(i)
            else:  # a limited request probes Redis (a 429 from it counts as an answer)
                _limited_request(fleet.replica_url(i, "/v1/chat/completions"), fleet.keys["limited"])
        if waiting:
            time.sleep(0.3)
    return not waiting


def _metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def _limited_request(url: str, api_key: str) -> None:
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "probe"}], "max_tokens": 1})
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    with contextlib.suppress(urllib.error.HTTPError), urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def rolling_restart(fleet: Fleet, quick: bool) -> Row:
    """SIGTERM each replica in turn, wait until it is back and healthy, next; long streams included."""

    def incident() -> str:
        took = []
        for i in range(REPLICAS):
            time.sleep(0.5)
            took.append(fleet.signal_replica(i, signal.SIGTERM))
            fleet.start_replica(i)
            fleet.wait_in_rotation(i)
        return "exits after SIGTERM: " + ", ".join(f"{t:.1f}s" for t in took)

    outcomes, note = _under_load(fleet, quick, incident, long_model="slow")
    return _row("rolling restart", fleet, outcomes, note=note)


def _under_load(
    fleet: Fleet, quick: bool, incident: Callable[[], str], *, seconds: float = 0.0, long_model: str = ""
) -> tuple[list[Outcome], str]:
    """Run traffic while `incident` runs in a thread; the traffic stops when both are done (or after `seconds`)."""

    async def both() -> tuple[list[Outcome], str]:
        started = time.monotonic()
        happening = asyncio.ensure_future(asyncio.to_thread(incident))
        outcomes: list[Outcome] = []
        # Rounds of a second of traffic until the incident is over and `seconds` have passed.
        while not happening.done() or time.monotonic() - started < seconds:
            traffic = _traffic(fleet, quick, seconds=1.0, total=0, pause=0.02, long_model=long_model)
            outcomes += await run_traffic(traffic)
        return outcomes, await happening

    return asyncio.run(both())


SCENARIOS: dict[str, Callable[[Fleet, bool], Row]] = {
    "steady": steady,
    "limits": limits,
    "token-limits": token_limits,
    "reload": reload,
    "replica-killed": replica_killed,
    "redis-killed": redis_primary_killed,
    "rolling-restart": rolling_restart,
}


def render(rows: list[Row]) -> str:
    """The table."""
    head = (
        "scenario",
        "requests",
        "client errors",
        "records exp/stored/dup/resent",
        "limit admitted / configured",
        "note",
    )
    lines = [
        (
            r.scenario,
            str(r.requests),
            str(r.client_errors),
            f"{r.records.expected} / {r.records.stored} / {r.records.duplicated} / {r.records.resent}",
            r.admitted,
            f"{r.note}; FAILED: {r.failed}" if r.failed else r.note,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in column) for column in zip(head, *lines, strict=True)]
    out = [" | ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in (head, *lines)]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the fleet and print the table; 1 when any scenario saw a client error or a lost or doubled record."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter incidents")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: expected some of {', '.join(SCENARIOS)}")
    rows = []
    with fleet() as running:
        for name in names:
            rows.append(SCENARIOS[name](running, args.quick))
            print(render(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(render(rows))
    bad = [
        r for r in rows if r.client_errors or r.records.stored != r.records.expected or r.records.duplicated or r.failed
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
