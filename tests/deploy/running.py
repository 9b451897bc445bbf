"""Start a long-running command (a gateway, an auth or stats server) for a test, wait until it serves, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence

START_TIMEOUT = 30.0  # a cold start on a loaded 2-core machine; a warm one takes about a second
STOP_TIMEOUT = 20.0


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports nobody listens on right now (held together while chosen: a port just
    released may be handed out again, and two listeners on one port fail to start)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    (port,) = free_ports(1)
    return port


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would change tollgate's behaviour (keys, a config, listen addresses)."""
    skip = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in skip and not k.startswith("TOLLGATE_")}
    env.update(extra)
    return env


class Running:
    """A started process, its output in a file (a pipe nobody reads could block its logging)."""

    def __init__(self, process: subprocess.Popen[bytes], log: tempfile._TemporaryFileWrapper[bytes]) -> None:
        self.process = process
        self._log = log

    def output(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as text:
            return text.read().decode(errors="replace")

    def wait_http(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Poll `url` until it answers 200; fail with the process's output if it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before {url} answered:\n{self.output()}")
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{url} did not answer 200 within {timeout}s:\n{self.output()}")

    def wait_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until something accepts connections on 127.0.0.1:`port` (a gRPC server)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before port {port}:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            time.sleep(0.1)
        raise AssertionError(f"nothing listened on {port} within {timeout}s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, and the exit code; SIGKILL if it outlives STOP_TIMEOUT (and fail then)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"did not stop within {STOP_TIMEOUT}s of SIGTERM:\n{self.output()}") from None
        return self.process.returncode


@contextlib.contextmanager
def running(argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> Iterator[Running]:
    """Start `argv`; it is stopped (and its output shown on failure) when the block exits."""
    with tempfile.NamedTemporaryFile(prefix="tollgate-test-", suffix=".log") as log:
        process = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        started = Running(process, log)
        try:
            yield started
        finally:
            started.stop()
