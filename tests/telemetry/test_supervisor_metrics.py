"""The supervisor passes its metrics directory to every worker, and a dead worker's live gauges stop counting while
its counters stay in the sums."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from gateway.workers import Supervisor

# A worker that writes a live gauge and a counter to the shared directory, then dies at once.
DYING_WORKER = [
    sys.executable,
    "-c",
    "from prometheus_client import Counter, Gauge\n"
    "Gauge('tollgate_test_depth', 'h', multiprocess_mode='livesum').set(3)\n"
    "Counter('tollgate_test_requests', 'h').inc()\n"
    "raise SystemExit(1)\n",
]


def test_dead_workers_gauges_are_forgotten_and_counters_kept(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        # Workers that keep dying at start make the supervisor give up after three: it saw each of them die.
        assert Supervisor(DYING_WORKER, workers=1, metrics_dir=str(tmp_path)).run() == 1
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert len(list(tmp_path.glob("counter_*.db"))) == 3
    assert list(tmp_path.glob("gauge_livesum_*.db")) == []
