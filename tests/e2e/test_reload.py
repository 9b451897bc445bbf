"""Config reload of real `tollgate` processes: SIGHUP, `POST /admin/reload`, `AdminService.Reload`, the hash in
`/readyz` and the metrics, and every worker of `serve --workers 2` reloaded through one worker's admin API."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import config_for
from tests.e2e.test_cli import tollgate
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc

ADMIN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def config(upstream: FakeOpenAI, extra_model: str = "") -> str:
    text = config_for(upstream.base_url, extra=f"admin: {{token: {ADMIN}}}")
    return text + (f"  - {{name: {extra_model}, targets: [{{backend: demo}}]}}\n" if extra_model else "")


def write(path: Path, text: str) -> None:
    path.write_text(text)


async def readyz(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/readyz") as resp:
        assert resp.status == 200
        return str((await resp.json())["config"])


async def models(session: aiohttp.ClientSession, base: str) -> list[str]:
    async with session.get(f"{base}/v1/models") as resp:
        return [m["id"] for m in (await resp.json())["data"]]


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Poll `check` every 0.1 s until it holds; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.1)


async def test_sighup_admin_http_and_grpc_reload_a_serving_process(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = tmp_path / "tollgate.yaml"
    write(path, config(upstream))
    async with tollgate("serve", "--config", str(path)) as gateway:
        await gateway.wait_listening("http", "grpc")
        base = f"http://127.0.0.1:{gateway.ports['http']}"
        async with aiohttp.ClientSession() as session:
            first = await readyz(session, base)
            # SIGHUP
            write(path, config(upstream, "by-sighup"))
            gateway.process.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                return "by-sighup" in await models(session, base)

            await wait_for(reloaded)
            second = await readyz(session, base)
            assert second != first
            # The admin API over HTTP: no token, a bad config (400 naming the field), a good one.
            async with session.post(f"{base}/admin/reload") as resp:
                assert resp.status == 401
            write(path, config(upstream).replace("{backend: demo, model: tollgate-demo}", "{backend: gone}"))
            async with session.post(f"{base}/admin/reload", headers=AUTH) as resp:
                body = await resp.json()
                assert resp.status == 400, body
                assert "models[2].targets[0].backend: unknown backend 'gone'" in body["error"]["message"]
            assert await readyz(session, base) == second
            write(path, config(upstream, "by-http"))
            async with session.post(f"{base}/admin/reload", headers=AUTH) as resp:
                body = await resp.json()
                assert resp.status == 200, body
            assert (body["result"], body["previous"]) == ("success", second)
            third = body["config"]
            assert await readyz(session, base) == third and "by-http" in await models(session, base)
            # And over gRPC.
            write(path, config(upstream, "by-grpc"))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}") as channel:
                admin = admin_pb2_grpc.AdminServiceStub(channel)
                answer = await admin.Reload(admin_pb2.ReloadRequest(), metadata=[("authorization", f"Bearer {ADMIN}")])
                assert (answer.result, answer.previous_hash) == ("success", third)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.Reload(admin_pb2.ReloadRequest(), metadata=[("authorization", "Bearer nope")])
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await readyz(session, base) == answer.config_hash
            async with session.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            assert 'tollgate_config_reloads_total{result="success"} 3.0' in metrics
            assert 'tollgate_config_reloads_total{result="failure"} 1.0' in metrics
            assert f'tollgate_config_info{{hash="{answer.config_hash}"}} 1.0' in metrics
            assert f'tollgate_config_info{{hash="{first}"}} 0.0' in metrics
        assert await gateway.terminate() == 0
    output = gateway.output()
    assert output.count("config reload (sighup): config ") == 1
    assert "config reload (admin) failed" in output and "unknown backend 'gone'" in output


async def test_every_worker_reloads_through_one_workers_admin_api(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = tmp_path / "tollgate.yaml"
    write(path, config(upstream).replace("server: {", "server: {reload_poll: 0s, "))  # no file watch: signals only
    async with tollgate("serve", "--config", str(path), "--workers", "2") as gateway:
        await gateway.wait_listening("http")
        base = f"http://127.0.0.1:{gateway.ports['http']}"
        # New connections each time, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def both_listening() -> bool:
                return gateway.output().count("http listening on") == 2

            await wait_for(both_listening, 20)
            before = await readyz(session, base)
            write(path, config(upstream, "everywhere").replace("server: {", "server: {reload_poll: 0s, "))
            async with session.post(f"{base}/admin/reload", headers=AUTH) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["result"] == "success", body
            after = body["config"]

            async def all_new() -> bool:
                return {await readyz(session, base) for _ in range(20)} == {after}

            await wait_for(all_new, 10)
            assert after != before
        assert await gateway.terminate() == 0
    output = gateway.output()
    # One worker reloaded through the API, the other on the supervisor's SIGHUP (the first then finds nothing new).
    assert output.count("config reload (admin): config ") == 1
    assert output.count("config reload (sighup): config ") == 1


async def test_a_split_front_door_passes_the_admin_reload_to_its_engine(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = tmp_path / "tollgate.yaml"
    write(path, config(upstream).replace("server: {", "server: {reload_poll: 0s, "))
    async with tollgate("engine", "--config", str(path)) as engine:
        await engine.wait_listening("grpc")
        address = f"127.0.0.1:{engine.ports['grpc']}"
        async with tollgate("frontdoor", "--config", str(path), "--engine", address, "--http", "127.0.0.1:0") as door:
            await door.wait_listening("http")
            base = f"http://127.0.0.1:{door.ports['http']}"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/readyz") as resp:
                    assert await resp.json() == {"status": "ready"}  # the engine's hash is the engine's to say
                write(path, config(upstream, "split").replace("server: {", "server: {reload_poll: 0s, "))
                async with session.post(f"{base}/admin/reload", headers=AUTH) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["result"] == "success", body
                assert "split" in await models(session, base)
                async with session.post(f"{base}/admin/reload", headers={"Authorization": "Bearer nope"}) as resp:
                    assert resp.status == 401
            assert await door.terminate() == 0
        assert await engine.terminate() == 0
    assert "config reload (admin): config " in engine.output()
