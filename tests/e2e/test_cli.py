"""The `tollgate` command run for real: `serve`, `engine` + `frontdoor`, the embedded default and `check-config`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import openai
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import StartGateway, config_for

MESSAGES = [{"role": "user", "content": "hello there"}]
REPLY = "This is a reply from the fake OpenAI "  # the fake's answer with chunks=8
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(r"\b(http|grpc|auth|stats) listening on 127\.0\.0\.1:(\d+)")


def child_env(**extra: str) -> dict[str, str]:
    """This environment without what would change the command's behaviour (an OpenAI key, a config, a log level)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TOLLGATE_CONFIG", "TOLLGATE_LOG_LEVEL")}
    env.update(extra)
    return env


class Tollgate:
    """One `python -m gateway ...` process, with the ports it announced on stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ports: dict[str, int] = {}
        self.stderr: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}/v1"

    async def _readline(self) -> str:
        assert self.process.stderr is not None
        line = (await self.process.stderr.readline()).decode(errors="replace")
        if line:
            self.stderr.append(line)
        return line

    async def wait_listening(self, *kinds: str) -> None:
        """Read stderr until every one of `kinds` ("http", "grpc") has announced its port."""

        async def read() -> None:
            while not set(kinds) <= self.ports.keys():
                line = await self._readline()
                if not line:
                    raise AssertionError(f"tollgate exited before listening:\n{self.output()}")
                match = LISTENING.search(line)
                if match:
                    self.ports[match.group(1)] = int(match.group(2))

        try:
            await asyncio.wait_for(read(), START_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"tollgate did not announce {kinds} in {START_TIMEOUT}s:\n{self.output()}") from None
        # Keep reading so that a full pipe never blocks the process's logging.
        self._drain = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        while await self._readline():
            pass

    def output(self) -> str:
        return "".join(self.stderr)

    async def terminate(self) -> int:
        """SIGTERM, and the exit code (it must exit within STOP_TIMEOUT)."""
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 5)
        return code

    async def kill(self) -> None:
        """Make sure the process is gone: terminate, wait 5 s, kill."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._drain is not None and not self._drain.done():
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


@contextlib.asynccontextmanager
async def tollgate(*args: str, env: Mapping[str, str] | None = None) -> AsyncIterator[Tollgate]:
    """Start `python -m gateway ARGS`; it is always gone when the block exits."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        "--log-level",
        "INFO",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else child_env(),
    )
    running = Tollgate(process)
    try:
        yield running
    finally:
        await running.kill()


async def run(*args: str) -> tuple[int, str, str]:
    """Run `python -m gateway ARGS` to completion: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
def config_file(tmp_path: Path, upstream: FakeOpenAI) -> Path:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config_for(upstream.base_url))
    return path


def client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10)


async def complete_and_stream(base_url: str, upstream: FakeOpenAI) -> None:
    """One whole and one streamed completion through the gateway at `base_url`, both answered by `upstream`."""
    before = len(upstream.requests)
    sdk = client(base_url)
    try:
        completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == REPLY
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 8

        stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert chunks[-1].choices[0].finish_reason == "stop"
    finally:
        await sdk.close()
    sent = upstream.requests[before:]
    assert [r.path for r in sent] == ["/v1/chat/completions"] * 2
    assert [r.json.get("stream", False) for r in sent] == [False, True]


# ---------------------------------------------------------------------------------------------------- serve


async def test_serve(config_file: Path, upstream: FakeOpenAI) -> None:
    async with tollgate("serve", "--config", str(config_file)) as gateway:
        await gateway.wait_listening("http", "grpc")
        await complete_and_stream(gateway.base_url, upstream)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert await gateway.terminate() == 0, gateway.output()
        assert "shutting down" in gateway.output()


# ---------------------------------------------------------------------------------------------------- split


async def test_engine_and_frontdoor(config_file: Path, upstream: FakeOpenAI) -> None:
    async with tollgate("engine", "--config", str(config_file)) as engine:
        await engine.wait_listening("grpc")
        assert "http" not in engine.ports
        engine_address = f"127.0.0.1:{engine.ports['grpc']}"
        async with tollgate(
            "frontdoor", "--config", str(config_file), "--engine", engine_address, "--http", "127.0.0.1:0"
        ) as frontdoor:
            await frontdoor.wait_listening("http")
            await complete_and_stream(frontdoor.base_url, upstream)

            sdk = client(frontdoor.base_url)
            try:
                with pytest.raises(openai.NotFoundError) as info:
                    await sdk.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
            finally:
                await sdk.close()
            assert info.value.status_code == 404
            assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
            assert "nope" in info.value.message

            assert await frontdoor.terminate() == 0, frontdoor.output()
        assert await engine.terminate() == 0, engine.output()


# ---------------------------------------------------------------------------------------------------- default config


async def test_serve_embedded_default() -> None:
    async with tollgate("serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0") as gateway:
        await gateway.wait_listening("http", "grpc")
        sdk = client(gateway.base_url)
        try:
            models = await sdk.models.list()
            assert [m.id for m in models.data] == ["demo"]

            stream = await sdk.chat.completions.create(model="demo", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            chunks = [chunk async for chunk in stream]
        finally:
            await sdk.close()
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(pieces) > 1
        assert "".join(pieces).strip()
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert await gateway.terminate() == 0, gateway.output()


# ---------------------------------------------------------------------------------------------------- check-config


async def test_check_config_ok(config_file: Path) -> None:
    code, stdout, stderr = await run("check-config", "--config", str(config_file))
    assert code == 0, stderr
    assert re.fullmatch(r"ok: 2 backends, 3 models, config [0-9a-f]{12}", stdout.strip()), stdout


async def test_check_config_unknown_backend(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
backends:
  - {name: demo, provider: mock}
models:
  - {name: m, targets: [{backend: nope}]}
"""
    )
    code, _, stderr = await run("check-config", "--config", str(bad))
    assert code == 2
    assert "models[0].targets[0].backend: unknown backend 'nope'" in stderr


async def test_check_config_unknown_provider(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
backends:
  - {name: weird, provider: bogus}
models:
  - {name: m, targets: [{backend: weird}]}
"""
    )
    code, _, stderr = await run("check-config", "--config", str(bad))
    assert code == 2
    assert "provider" in stderr
    assert "bogus" in stderr


async def test_serve_with_the_reference_auth_and_stats_servers(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """The README's flow, every piece a real process: a key made with the CLI, authsvc, statssvc, serve, a query."""
    keys = tmp_path / "keys.yaml"
    code, out, err = await run("keys", "add", "--file", str(keys), "--user", "alice", "--models", "gpt-4o*")
    assert code == 0, err
    key = out.splitlines()[0]
    assert key.startswith("tgk_")
    assert key not in keys.read_text()
    async with (
        tollgate("authsvc", "--keys", str(keys), "--listen", "127.0.0.1:0") as auth,
        tollgate("statssvc", "--db", str(tmp_path / "usage.db"), "--listen", "127.0.0.1:0") as stats,
    ):
        await auth.wait_listening("auth")
        await stats.wait_listening("stats")
        config = tmp_path / "tollgate.yaml"
        config.write_text(
            config_for(upstream.base_url).replace(
                "auth: none",
                f"""auth: {{server: "127.0.0.1:{auth.ports["auth"]}"}}
stats: {{server: "127.0.0.1:{stats.ports["stats"]}", spool_dir: "{tmp_path / "spool"}"}}""",
            )
        )
        async with tollgate("serve", "--config", str(config)) as gateway:
            await gateway.wait_listening("http", "grpc")
            sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10)
            completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == REPLY
            stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            assert [chunk async for chunk in stream]
            with pytest.raises(openai.PermissionDeniedError):
                await sdk.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
            with pytest.raises(openai.AuthenticationError):
                await client(gateway.base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert await gateway.terminate() == 0  # a graceful stop delivers what is pending
        assert key not in gateway.output() + auth.output() + stats.output()
        server = f"127.0.0.1:{stats.ports['stats']}"
        code, out, err = await run("stats", "usage", "--server", server, "--by", "user,model", "--json")
        assert code == 0, err
        usage = orjson.loads(out)
        # Two answered, one refused for its model: three records; the unauthenticated one is nobody's usage.
        assert usage["totals"]["requests"] == 3
        assert usage["totals"]["errors"] == 1
        assert usage["totals"]["output_tokens"] == 16
        by_model = {group["keys"]["model"]: group["totals"] for group in usage["groups"]}
        assert {group["keys"]["user"] for group in usage["groups"]} == {"alice"}
        assert (by_model["gpt-4o-mini"]["requests"], by_model["demo"]["errors"]) == (2, 1)


async def test_a_frozen_auth_server_fails_closed_within_the_deadline(
    tmp_path: Path, upstream: FakeOpenAI, start_gateway: StartGateway
) -> None:
    """The real authsvc, stopped with SIGSTOP (it accepts connections but never answers), then resumed."""
    keys = tmp_path / "keys.yaml"
    code, out, err = await run("keys", "add", "--file", str(keys), "--user", "alice")
    assert code == 0, err
    key = out.splitlines()[0]
    async with tollgate("authsvc", "--keys", str(keys), "--listen", "127.0.0.1:0") as auth:
        await auth.wait_listening("auth")
        gateway = await start_gateway(
            config_for(upstream.base_url).replace(
                "auth: none", f'auth: {{server: "127.0.0.1:{auth.ports["auth"]}", timeout: 300ms}}'
            )
        )
        sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10)
        auth.process.send_signal(signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(openai.InternalServerError) as caught:
                await sdk.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
            assert caught.value.status_code == 503
            assert "did not answer in time" in caught.value.message
            assert asyncio.get_running_loop().time() - started < 3
        finally:
            auth.process.send_signal(signal.SIGCONT)
        completion = await sdk.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content
