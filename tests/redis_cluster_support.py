"""A real Redis Cluster (three primaries, three replicas) for the whole test session, started once on free ports.

Tests that kill a node revive it before they end (`LocalRedisCluster.revive`), so the next test finds the cluster
whole. Under `CI=true` a missing `redis-server` fails the run instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.redis_cluster import LocalRedisCluster, start_cluster
from tests.redis_support import no_redis


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """The session's cluster; its `url` is a `redis:` setting (`redis+cluster://…`)."""
    try:
        cluster = start_cluster()
    except FileNotFoundError as exc:
        no_redis(str(exc))
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
