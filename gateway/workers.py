"""`tollgate serve --workers N`: N copies of `serve` on one HTTP port and one gRPC port, kept running.

Each worker is a whole `serve` process binding the same ports with SO_REUSEPORT, so the kernel spreads connections
across them. The parent only supervises: it forwards SIGTERM and SIGINT, passes SIGHUP (reload the config) to every
worker (a worker sends it one when it was asked to reload through the admin API), and restarts a worker that dies
(giving up when workers keep dying right after they start). Anything a worker keeps in memory is per worker, so
limits must live in Redis: with in-memory limits the command refuses to start rather than multiply every limit by N.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from gateway.config import GatewayConfig
from gateway.telemetry.metrics import MULTIPROC_ENV
from gateway.telemetry.multiproc import forget_worker

log = logging.getLogger("tollgate")

_QUICK_DEATH = 5.0  # a worker that dies sooner than this after starting is failing, not crashing now and then
_MAX_QUICK_DEATHS = 3
_POLL = 0.2


def refusal(config: GatewayConfig, workers: int) -> str | None:
    """Why `workers` processes cannot serve `config`, or None."""
    limits_apply = bool(config.limits.rules) or config.auth is not None
    if workers > 1 and limits_apply and config.limits.backend == "memory":
        return (
            f"--workers {workers} with `limits.backend: memory` would give every worker its own counters and "
            "multiply every limit by the number of workers; use `limits.backend: redis`"
        )
    return None


def caveats(config: GatewayConfig, workers: int) -> list[str]:
    """What `workers` processes serving `config` do differently from one, worth a warning."""
    if workers > 1 and config.redis_url is None:
        return [
            f"--workers {workers} without `redis:` keeps stored responses (/v1/responses) in each worker: a GET or a "
            "previous_response_id answered by another worker is a 404; set `redis:` to share them"
        ]
    return []


def reserve(address: str) -> tuple[socket.socket, str]:
    """Bind `address` (port 0: any free port) with SO_REUSEPORT, so the workers can bind the same port after it."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    bound = sock.getsockname()[1]
    return sock, f"[{host}]:{bound}" if family == socket.AF_INET6 else f"{host}:{bound}"


class Supervisor:
    """Runs `workers` copies of a command and keeps them running until told to stop."""

    def __init__(self, argv: Sequence[str], workers: int, *, metrics_dir: str | None = None) -> None:
        self._argv = list(argv)
        # Where the workers' metric values are shared, so that a scrape of any one shows them all.
        self._metrics_dir = metrics_dir
        self._env = {**os.environ, MULTIPROC_ENV: metrics_dir} if metrics_dir else None
        self._procs: list[tuple[subprocess.Popen[bytes], float]] = []
        self._workers = workers
        self._stopping = False

    def _spawn(self) -> tuple[subprocess.Popen[bytes], float]:
        return subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, env=self._env), time.monotonic()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        self._signal_all()

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: every worker reloads its config")
        self._signal_all(signal.SIGHUP)

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT (0), or until workers keep dying at start (1)."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        self._procs = [self._spawn() for _ in range(self._workers)]
        log.info("started %d workers: pids %s", self._workers, ", ".join(str(p.pid) for p, _ in self._procs))
        quick_deaths = 0
        while not self._stopping:
            time.sleep(_POLL)
            for i, (proc, started) in enumerate(self._procs):
                code = proc.poll()
                if code is None or self._stopping:
                    continue
                if self._metrics_dir:
                    forget_worker(self._metrics_dir, proc.pid)
                quick_deaths = quick_deaths + 1 if time.monotonic() - started < _QUICK_DEATH else 0
                if quick_deaths >= _MAX_QUICK_DEATHS:
                    log.error("workers keep exiting right after they start (last: code %s); stopping", code)
                    self._stop(signal.SIGTERM, None)
                    self._wait()
                    return 1
                log.error("worker pid %d exited with code %s; starting another", proc.pid, code)
                self._procs[i] = self._spawn()
        # A signal that came while a worker was being started reached only the workers started before it.
        self._signal_all()
        self._wait()
        return 0

    def _signal_all(self, signum: int = signal.SIGTERM) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def _wait(self) -> None:
        for proc, _ in self._procs:
            proc.wait()


def worker_argv(config_path: str | None, http: str, grpc_address: str, log_level: str) -> list[str]:
    """The command line of one worker."""
    argv = [sys.executable, "-m", "gateway", "serve", "--worker", "--http", http, "--grpc", grpc_address]
    if config_path:
        argv += ["--config", config_path]
    return [*argv, "--log-level", log_level]
