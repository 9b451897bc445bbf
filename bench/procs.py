"""The benchmark's subprocesses: start one, wait for its "listening" line, read its CPU and peak RSS, stop it.

Each process writes stdout and stderr to one log file (never a pipe nobody drains); readiness is a regex over that
file. CPU comes from /proc/PID/stat (utime + stime, all threads, in clock ticks) and peak RSS from VmHWM in
/proc/PID/status, so only Linux is supported.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLOCK_TICKS", "Service", "cpu_seconds", "peak_rss_kib", "start_service", "stop_all", "system_busy_seconds"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
_LOG_TAIL = 2000
# What a service prints once it listens on loopback (for `Service.wait_for`): the port, or the whole URL.
HTTP_READY = r"http listening on 127\.0\.0\.1:(\d+)"  # tollgate serve / frontdoor
GRPC_READY = r"grpc listening on 127\.0\.0\.1:(\d+)"  # tollgate serve / engine
URL_READY = r"listening (http://\S+)"  # the fake upstreams and the floor proxy


@dataclass
class Service:
    """One subprocess the benchmark started; `proc` is None once it has been stopped."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-_LOG_TAIL:]

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Poll the log until `pattern` matches; fail early if the process exits, late on `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            match = regex.search(text)
            if match is not None:
                return match
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.name} exited (code {code}) before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(_POLL_INTERVAL)


def start_service(name: str, argv: list[str], log_dir: Path, cwd: Path | None = None) -> Service:
    """Start `argv` with its output going to `log_dir`/`name`.log; the caller must stop it (see `stop_all`)."""
    log_path = log_dir / f"{name}.log"
    service = Service(name, argv, log_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        service.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, close_fds=True
        )
    return service


def stop_all(services: list[Service]) -> list[str]:
    """Stop every service, newest first, by its own PID: SIGTERM, wait, SIGKILL on timeout. Returns problems."""
    problems: list[str] = []
    for service in reversed(services):
        proc, service.proc = service.proc, None
        if proc is None or proc.poll() is not None:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"{service.name} (pid {proc.pid}) ignored SIGTERM for {_STOP_TIMEOUT:.0f}s; killed")
            proc.kill()
            proc.wait()
    return problems


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads, living and dead) in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def peak_rss_kib(pid: int) -> int:
    """The peak resident set size (VmHWM) of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def system_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs; user, nice, system, irq, softirq, steal) in seconds."""
    with open("/proc/stat", "rb") as stat:
        fields = stat.readline().split()  # "cpu user nice system idle iowait irq softirq steal guest guest_nice"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
