"""On-demand boot through the whole gateway: a backend whose wake command starts the fake server after a delay holds
40 concurrent requests (some streamed) and serves them all after exactly one wake; a wake that never becomes ready
answers 503 with Retry-After; held clients that leave are dropped without an upstream call; a model with another
healthy target uses it while the sleeper wakes in the background; `--workers 2` sharing a Redis wake once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import StartGateway
from tests.e2e.test_cache import sdk
from tests.e2e.test_cli import tollgate

ONE_PROCESS = pytest.mark.parametrize("start_gateway", ["one-process"], indirect=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wake_config(port: int, wake: str, *, extra_backends: str = "", targets: str = "") -> str:
    targets = targets or "[{backend: sleepy, model: gpt-4o-mini}]"
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - name: sleepy
    provider: vllm
    base_url: "http://127.0.0.1:{port}/v1"
    connect_timeout: 1s
    wake: {wake}
{extra_backends}
models:
  - {{name: local, targets: {targets}}}
"""


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Path]:
    """Where the wake command writes the started server's pid; that server is killed at teardown."""
    pidfile = tmp_path / "server.pid"
    yield pidfile
    if pidfile.exists():
        for line in pidfile.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line), signal.SIGTERM)


def boot_command(port: int, pidfile: Path, wakes: Path, delay: float) -> str:
    """A command that counts itself, starts the fake server after `delay` in the background, and returns at once."""
    server = f"{sys.executable} -m gateway.testing.fake_openai --port {port} --chunks 4"
    script = f"echo woke >> {wakes}; (sleep {delay}; exec {server} >/dev/null 2>&1) & echo $! >> {pidfile}"
    return f"[sh, -c, {script!r}]".replace("'", '"')


async def ask(client: openai.AsyncOpenAI, stream: bool) -> str:
    messages = [{"role": "user", "content": "hello there"}]
    if not stream:
        reply = await client.chat.completions.create(model="local", messages=messages)
        return reply.choices[0].message.content or ""
    chunks = await client.chat.completions.create(model="local", messages=messages, stream=True)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


@ONE_PROCESS
async def test_forty_held_requests_are_served_after_one_wake(
    start_gateway: StartGateway, started: Path, tmp_path: Path
) -> None:
    port, wakes = free_port(), tmp_path / "wakes"
    command = boot_command(port, started, wakes, delay=1.0)
    gateway = await start_gateway(wake_config(port, f"{{command: {command}, timeout: 20s, poll_interval: 100ms}}"))
    client = sdk(gateway)
    loop = asyncio.get_running_loop()
    began = loop.time()
    answers = await asyncio.gather(*(ask(client, stream=i % 4 == 0) for i in range(40)))
    assert loop.time() - began >= 1.0  # they waited for the boot…
    assert len(set(answers)) == 1 and answers[0]  # …and every one, streamed or not, got the whole answer
    assert wakes.read_text().splitlines() == ["woke"]
    # Awake now: no more waking.
    assert await ask(client, stream=False) == answers[0]
    assert wakes.read_text().splitlines() == ["woke"]


async def test_a_wake_that_never_becomes_ready_answers_503(start_gateway: StartGateway) -> None:
    port = free_port()
    wake = "{command: [sh, -c, 'echo starting; echo no GPU left >&2'], timeout: 1s, poll_interval: 100ms}"
    gateway = await start_gateway(wake_config(port, wake))
    async with aiohttp.ClientSession() as session:
        body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        replies = await asyncio.gather(
            *(session.post(f"{gateway.base_url}/chat/completions", json=body) for _ in range(3))
        )
        for resp in replies:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) > 0
            error = (await resp.json())["error"]
            assert error["code"] == "backend_wake_failed", error
            resp.release()


@ONE_PROCESS
async def test_a_failing_action_and_too_many_waiting(start_gateway: StartGateway) -> None:
    port = free_port()
    wake = "{command: [sh, -c, 'sleep 0.5; echo broken; exit 3'], timeout: 5s, max_waiting: 2, poll_interval: 50ms}"
    gateway = await start_gateway(wake_config(port, wake))
    client = sdk(gateway)
    results = await asyncio.gather(*(ask(client, stream=False) for _ in range(4)), return_exceptions=True)
    codes = sorted(str(getattr(r, "code", r)) for r in results)
    # Two held, then failed with the action; the two over max_waiting refused at once (the first refusal rests the
    # target for a second, so the last may find it resting).
    assert codes[:2] == ["backend_wake_failed"] * 2, results
    assert set(codes[2:]) <= {"backend_waking", "no_healthy_target"}, results
    for result in results:
        assert isinstance(result, openai.APIStatusError) and result.status_code == 503
        assert int(result.response.headers["retry-after"]) >= 1


@ONE_PROCESS
async def test_held_clients_that_leave_never_reach_the_backend(start_gateway: StartGateway) -> None:
    port = free_port()
    gateway = await start_gateway(wake_config(port, "{command: ['true'], timeout: 10s, poll_interval: 100ms}"))
    impatient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=0.5)
    results = await asyncio.gather(*(ask(impatient, stream=i % 2 == 0) for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, openai.APITimeoutError) for r in results), results
    backend = FakeOpenAI(chunks=2)  # the backend comes up only now
    await backend.start(port=port)
    try:
        assert await ask(sdk(gateway), stream=False)
        chats = [r for r in backend.requests if r.path == "/v1/chat/completions"]
        assert len(chats) == 1  # only the patient one
    finally:
        await backend.stop()


@ONE_PROCESS
async def test_another_healthy_target_serves_while_the_sleeper_wakes(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    port = free_port()
    async with FakeOpenAI(chunks=2, model_ids=("awake-model",)) as awake:
        other = f'  - {{name: awake, provider: openai, base_url: "{awake.base_url}"}}'
        targets = (
            "[{backend: sleepy, model: gpt-4o-mini, weight: 1000}, {backend: awake, model: awake-model, weight: 0.001}]"
        )
        wakes = tmp_path / "wakes"
        wake = f"{{command: [sh, -c, 'echo woke >> {wakes}'], timeout: 10s, poll_interval: 100ms}}"
        gateway = await start_gateway(wake_config(port, wake, extra_backends=other, targets=targets))
        client = sdk(gateway)
        loop = asyncio.get_running_loop()
        began = loop.time()
        reply = await client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "awake-model" and loop.time() - began < 1.0  # not held
        for _ in range(50):  # the wake action ran in the background
            if wakes.exists():
                break
            await asyncio.sleep(0.05)
        assert wakes.read_text().splitlines() == ["woke"]


async def test_two_workers_sharing_redis_wake_once(started: Path, tmp_path: Path, redis_url: str) -> None:
    port, wakes = free_port(), tmp_path / "wakes"
    command = boot_command(port, started, wakes, delay=1.0)
    config = tmp_path / "tollgate.yaml"
    config.write_text(f"redis: {redis_url}\n" + wake_config(port, f"{{command: {command}, timeout: 30s}}"))
    async with tollgate("serve", "--config", str(config), "--workers", "2") as gateway:
        await gateway.wait_listening("http")
        body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        # A new connection each, so that the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def one() -> int:
                async with session.post(f"{gateway.base_url}/chat/completions", json=body) as resp:
                    await resp.read()
                    return resp.status

            assert await asyncio.gather(*(one() for _ in range(20))) == [200] * 20
        assert wakes.read_text().splitlines() == ["woke"]
        assert await gateway.terminate() == 0
        # Which worker accepts which connection is the kernel's choice: when both held requests, the one that did
        # not take the lock in Redis only waited (tests/providers/test_wake.py shows the lock itself).
        assert gateway.output().count("(ok)") == 1
