"""The directory `serve --workers N` workers share their metric values through (prometheus_client multiprocess
mode): made by the supervisor before the workers start, passed down as PROMETHEUS_MULTIPROC_DIR, removed after."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client.multiprocess import mark_process_dead

from gateway.config import GatewayConfig


@contextlib.contextmanager
def shared_metrics_dir(config: GatewayConfig) -> Iterator[str | None]:
    """A fresh directory for the workers' metric files (None when metrics are off), removed at the end."""
    if not config.telemetry.metrics.enabled:
        yield None
        return
    path = tempfile.mkdtemp(prefix="tollgate-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def forget_worker(path: str, pid: int) -> None:
    """A worker exited: its `live*` gauges stop counting (its counters stay in the sums)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # untyped upstream
