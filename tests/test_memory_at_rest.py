"""Memory at rest: a gateway whose config uses no Redis never imports redis-py (≈ 11 MiB with the OpenTelemetry SDK
it pulls in); `gateway.redis_client` imports it when a client is made. Nor does it import the reference auth and
stats servers (and sqlite3), whose commands every `tollgate` registers. Each check runs in a fresh interpreter, as
`tollgate serve` starts: the CLI module, the embedded default config, the assembly."""

from __future__ import annotations

import subprocess
import sys

_LOADED = """
import os, sys
import gateway.cli
from gateway.assemble import assemble
from gateway.config import load_config
assembly = assemble(load_config(None, os.environ))
{extra}
heavy = {{"redis", "opentelemetry", "psutil", "sqlite3", "authsvc.server", "statssvc.server"}}
print(sorted(heavy & {{*sys.modules, *(name.partition(".")[0] for name in sys.modules)}}))
"""


def loaded(extra: str = "") -> str:
    script = _LOADED.format(extra=extra)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_the_default_config_imports_no_redis() -> None:
    assert loaded() == "[]"


def test_a_redis_client_imports_redis_py() -> None:
    # The control: the same check sees redis-py once a client exists (no connection is opened).
    extra = "from gateway.redis_client import connect\nconnect('redis://127.0.0.1:1/0', timeout=0.1, max_connections=1)"
    assert "'redis'" in loaded(extra)
