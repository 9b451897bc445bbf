"""The `serve --workers N` supervisor: a SIGTERM that arrives while workers are being started still stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from gateway.config import parse_config
from gateway.workers import Supervisor, caveats

# A stand-in worker: exits at once on SIGTERM, else would sleep far longer than the test may take.
WORKER = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(60)",
]


class SignalledMidSpawn(Supervisor):
    """Sends itself SIGTERM while starting its second worker, as an operator's stop might land."""

    def __init__(self) -> None:
        super().__init__(WORKER, workers=3)
        self.spawned: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> tuple[subprocess.Popen[bytes], float]:
        if len(self.spawned) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        proc, started = super()._spawn()
        self.spawned.append(proc)
        return proc, started


def test_a_stop_during_startup_reaches_every_worker() -> None:
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    supervisor = SignalledMidSpawn()
    started = time.monotonic()
    try:
        assert supervisor.run() == 0
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        for proc in supervisor.spawned:  # never leave one behind, whatever happened
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert time.monotonic() - started < 20
    assert len(supervisor.spawned) == 3
    # Each stopped (by its handler, or by SIGTERM's default action if it came before the handler was set).
    assert all(proc.returncode in (0, -signal.SIGTERM) for proc in supervisor.spawned)


def test_workers_without_redis_are_warned_that_stored_responses_are_per_worker() -> None:
    text = "auth: none\nbackends: [{name: d, provider: mock}]\nmodels: [{name: d, targets: [{backend: d}]}]\n"
    config = parse_config(text, {})
    assert caveats(config, 1) == []
    assert "stored responses" in caveats(config, 2)[0]
    assert caveats(parse_config("redis: redis://127.0.0.1:6379/0\n" + text, {}), 2) == []
