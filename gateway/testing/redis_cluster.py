"""A real Redis Cluster on loopback for tests and the fleet run: three primaries, three replicas, in a temp dir.

Started from `redis-server` (`cluster-enabled yes`) and `redis-cli --cluster create --cluster-replicas 1`, on free
ports; every process is stopped by its PID. `kill` SIGKILLs a node (a primary dies as in production), `wait_healthy`
waits for its replica to be promoted, and `revive` starts the dead node again from its own `nodes.conf`, so it
rejoins as a replica and the cluster is whole for the next user.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

# How long a node may be silent before the others fail it over. Short, so a failover takes a few seconds; long enough
# that a busy 2-core machine does not make a healthy node look dead.
NODE_TIMEOUT_MS = 1500
_NODES = 6
_START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Node:
    port: int
    bus_port: int  # set explicitly: the default, port + 10000, may be taken or past 65535
    workdir: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class LocalRedisCluster:
    """Six `redis-server` processes forming one cluster; `start()`, use `url`, `stop()`."""

    server_binary: str = "redis-server"
    cli_binary: str = "redis-cli"
    nodes: list[_Node] = field(default_factory=list)
    _root: Path | None = None

    @property
    def url(self) -> str:
        """The `redis:` setting that reaches it: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def pids(self) -> dict[int, int]:
        """Port → PID of each node running."""
        return {n.port: n.process.pid for n in self.nodes if n.process is not None}

    def start(self) -> None:
        """Start the six nodes, create the cluster, and wait until every slot is served."""
        self._root = Path(tempfile.mkdtemp(prefix="tollgate-redis-cluster-"))
        try:
            for i in range(_NODES):
                workdir = self._root / f"node{i}"
                workdir.mkdir()
                node = _Node(free_port(), free_port(), workdir)
                self.nodes.append(node)
                self._launch(node)
            for node in self.nodes:
                self._wait_ping(node)
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            create = [self.cli_binary, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, timeout=_START_TIMEOUT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout.decode()[-2000:]}")
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node by its PID and remove the temp dir."""
        for node in self.nodes:
            _stop(node)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot now."""
        client = self._any_client()
        try:
            slot = int(_cluster(client, "KEYSLOT", key))
            for start, end, primary, *_replicas in _cluster(client, "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        finally:
            client.close()
        raise RuntimeError(f"no node serves the slot of {key!r}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`: no goodbye, as when a machine dies."""
        node = self._node(port)
        if node.process is not None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()
            node.process = None

    def revive(self, port: int) -> None:
        """Start the node on `port` again; it reads its `nodes.conf` and rejoins (as a replica once failed over)."""
        node = self._node(port)
        if node.process is None:
            self._launch(node)
            self._wait_ping(node)
            self._wait_replica(node)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Until every running node says the cluster is ok and every slot is served by a running primary."""
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy in time")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        running = {n.port for n in self.nodes if n.process is not None}
        for port in running:
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                info = _cluster(client, "INFO")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                served = sum(
                    end - start + 1
                    for start, end, primary, *_ in _cluster(client, "SLOTS")
                    if int(primary[1]) in running
                )
                if served != 16384:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def _launch(self, node: _Node) -> None:
        args = [
            self.server_binary,
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(node.bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--repl-diskless-sync-delay", "0",  # a replica is in sync (and may take over) at once
            "--cluster-replica-validity-factor", "0",  # a replica always takes over, however long it was cut off
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        log = (node.workdir / "redis.log").open("ab")
        with log:
            node.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ping(self, node: _Node) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        client = redis.Redis(port=node.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if node.process is None or node.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {node.port} did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def _wait_replica(self, node: _Node) -> None:
        """A revived primary first claims its old slots; wait until it has heard it was replaced and follows."""
        deadline = time.monotonic() + _START_TIMEOUT
        client = redis.Redis(port=node.port, socket_timeout=1, decode_responses=True)
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    replication = client.info("replication")
                    if replication["role"] == "slave" and replication["master_link_status"] == "up":
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the revived node on port {node.port} did not rejoin as a replica")
                time.sleep(0.05)
        finally:
            client.close()

    def _any_client(self) -> redis.Redis:
        for node in self.nodes:
            if node.process is not None:
                return redis.Redis(port=node.port, socket_timeout=2)
        raise RuntimeError("no node is running")

    def _node(self, port: int) -> _Node:
        return next(n for n in self.nodes if n.port == port)


def _cluster(client: redis.Redis, *args: str) -> Any:
    """A CLUSTER subcommand on one node (redis-py leaves `execute_command` untyped)."""
    return client.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def _stop(node: _Node) -> None:
    if node.process is None:
        return
    node.process.terminate()
    try:
        node.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        node.process.kill()
        node.process.wait()
    node.process = None


def start_cluster() -> LocalRedisCluster:
    """A running cluster from the `redis-server` and `redis-cli` on PATH; the caller stops it."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise FileNotFoundError("redis-server and redis-cli are needed on PATH (Debian: apt-get install redis-server)")
    cluster = LocalRedisCluster(server, cli)
    cluster.start()
    return cluster
