"""A gRPC client that is not grpc's C core calls the engine: @grpc/grpc-js, on Node's own HTTP/2 (nghttp2), with the
protos loaded at run time. What a Node service calling tollgate directly does: unary and streaming calls with
metadata both ways, a request refused INVALID_ARGUMENT, a 6 MiB request (past every flow-control window), an unknown
method, grpc.health.v1, 50 streams at once on one connection, and a deadline that passes while the engine waits
for the first token (the client is tests/e2e/grpc_js_client.mjs)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.assemble import assemble
from gateway.config import parse_config
from gateway.engine.server import start_engine_server

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".tools" / "node_modules"
CONFIG = """
auth: none
backends:
  - {name: demo, provider: mock}
  - {name: slow, provider: mock, options: {first_token_delay: 5s}}
models:
  - {name: demo, targets: [{backend: demo, model: tollgate-demo}]}
  - {name: slow, targets: [{backend: slow, model: tollgate-slow}]}
"""
OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, UNIMPLEMENTED = 0, 3, 4, 12


@pytest.fixture
async def port() -> AsyncIterator[int]:
    engine = assemble(parse_config(CONFIG, os.environ)).engine
    server = await start_engine_server(engine, "127.0.0.1:0")
    yield server.port
    await server.stop(0)
    await engine.close()


async def _node_client(port: int) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (MODULES / "@grpc" / "grpc-js").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("node and @grpc/grpc-js are needed: `make test` installs grpc-js into .tools/")
        pytest.skip("node or @grpc/grpc-js missing (`make test` installs them)")
    process = await asyncio.create_subprocess_exec(
        node,
        str(Path(__file__).with_name("grpc_js_client.mjs")),
        str(port),
        str(ROOT / "protos"),
        "demo",
        "slow",
        env={**os.environ, "NODE_PATH": str(MODULES)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return dict(json.loads(out))


async def test_grpc_js_calls_the_engine(port: int) -> None:
    got = await _node_client(port)
    assert got["models"]["code"] == OK
    assert {m["id"] for m in got["models"]["response"]["models"]} == {"demo", "slow"}

    chat = got["chat"]
    assert chat["code"] == OK
    assert chat["response"]["choices"][0]["message"]["content"]
    assert chat["trailing"]["x-request-id"]  # the engine's own id, in the trailing metadata of a unary call

    stream = got["stream"]
    assert (stream["code"], stream["details"]) == (OK, "")
    assert stream["chunks"] >= 2 and stream["text"]
    assert stream["initial"]["x-request-id"]  # in the initial metadata of a stream

    assert got["invalid"]["code"] == INVALID_ARGUMENT
    assert "temperature" in got["invalid"]["details"]
    assert got["big"]["code"] in (OK, INVALID_ARGUMENT)  # taken whole, whatever the engine's rules make of it
    assert got["unknown"]["code"] == UNIMPLEMENTED
    assert got["health"] == {"code": OK, "bytes": [0x08, 0x01]}  # HealthCheckResponse{status: SERVING}
    assert [s["code"] for s in got["many"]] == [OK] * 50
    assert all(s["chunks"] >= 2 for s in got["many"])
    assert got["expired"]["code"] == DEADLINE_EXCEEDED
