"""Config reload in one process (`gateway.reload`): the whole reload path on real parts and a fake OpenAI server,
driven through the `ServingEngine` the doors call. The `tollgate` processes (SIGHUP, the admin API over HTTP and
gRPC, `--workers 2`) are in tests/e2e/test_reload.py."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from gateway.assemble import assemble
from gateway.call import CallContext, new_request_id
from gateway.config import Secret, load_config
from gateway.errors import AuthenticationError, InvalidRequestError, RateLimitError
from gateway.reload import FAILURE, SUCCESS, UNCHANGED, Reloader
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tollgate.gateway.v1 import gateway_pb2 as pb

ADMIN = "admin-token-for-tests"


def config_text(upstream: str, *, key: str = "sk-upstream", extra_models: str = "", extra: str = "") -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
admin: {{token: {ADMIN}}}
server: {{reload_poll: 100ms, reload_grace: 5s}}
backends:
  - {{name: primary, provider: openai, base_url: "{upstream}", api_key: "{key}", read_timeout: 5s}}
  - {{name: demo, provider: mock, options: {{chunks: 5}}}}
{extra}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: primary, model: gpt-4o-mini}}], cache: {{ttl: 1h, scope: global}}}}
  - {{name: demo, targets: [{{backend: demo, model: tollgate-demo}}]}}
{extra_models}
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)


def params(model: str = "gpt-4o-mini", text: str = "hello") -> pb.ChatCompletionParams:
    """A deterministic request (temperature 0: a model with `cache:` caches it)."""
    message = pb.ChatMessage(role=pb.ROLE_USER, content=text)
    return pb.ChatCompletionParams(model=model, messages=[message], temperature=0)


def ctx(key: str | None = None) -> CallContext:
    return CallContext(request_id=new_request_id(), api_key=Secret(key) if key else None)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-upstream", chunks=4) as fake:
        yield fake


@pytest.fixture
def path(tmp_path: Path, upstream: FakeOpenAI) -> Path:
    file = tmp_path / "tollgate.yaml"
    write(file, config_text(upstream.base_url))
    return file


@pytest.fixture
async def reloader(path: Path) -> AsyncIterator[Reloader]:
    assembly = assemble(load_config(path, os.environ))
    await assembly.start()
    running = Reloader(assembly, str(path), os.environ)
    try:
        yield running
    finally:
        await running.close()


def reloads(reloader: Reloader, result: str) -> float:
    metrics = reloader.assembly.telemetry.metrics
    assert metrics is not None
    return metrics.config_reloads.labels(result)._value.get()


def info(reloader: Reloader) -> dict[str, float]:
    metrics = reloader.assembly.telemetry.metrics
    assert metrics is not None
    text = metrics.exposition().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("tollgate_config_info{"):
            found[line.split('hash="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return found


async def test_a_valid_reload_serves_the_new_config(reloader: Reloader, path: Path, upstream: FakeOpenAI) -> None:
    before = reloader.config_hash()
    assert info(reloader) == {before: 1.0}
    names = [m.id for m in (await reloader.engine.list_models(ctx())).models]
    assert "extra" not in names
    write(path, config_text(upstream.base_url, extra_models="  - {name: extra, targets: [{backend: demo}]}"))
    done = await reloader.run("test")
    assert (done.result, done.previous_hash) == (SUCCESS, before)
    assert done.config_hash == reloader.config_hash() != before
    assert "extra" in [m.id for m in (await reloader.engine.list_models(ctx())).models]
    answer = await reloader.engine.create_chat_completion(params("extra"), ctx())
    assert answer.choices[0].message.content
    assert reloads(reloader, "success") == 1
    assert info(reloader) == {before: 0.0, done.config_hash: 1.0}
    # The same file again: nothing to do, nothing rebuilt, not counted.
    again = await reloader.run("test")
    assert (again.result, again.config_hash) == (UNCHANGED, done.config_hash)
    assert reloads(reloader, "success") == 1


async def test_an_invalid_config_is_refused_and_the_old_one_serves_on(
    reloader: Reloader, path: Path, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    before = reloader.config_hash()
    text = config_text(upstream.base_url).replace("{backend: demo, model: tollgate-demo}", "{backend: nowhere}")
    write(path, text)
    with caplog.at_level(logging.INFO, logger="tollgate"):
        done = await reloader.run("test")
    assert done.result == FAILURE
    assert done.error.startswith("models[1].targets[0].backend: unknown backend 'nowhere'")
    assert reloader.config_hash() == before
    assert any(
        "config reload (test) failed" in r.getMessage() and "models[1].targets[0]" in r.getMessage()
        for r in caplog.records
    )
    assert reloads(reloader, "failure") == 1 and reloads(reloader, "success") == 0
    answer = await reloader.engine.create_chat_completion(params("demo"), ctx())
    assert answer.choices[0].message.content
    # Through the admin API: a 400 naming the field; without the token nothing is read at all.
    with pytest.raises(InvalidRequestError, match=r"models\[1\]\.targets\[0\]\.backend") as refused:
        await reloader.reload(ctx(ADMIN))
    assert refused.value.http_status == 400 and before in refused.value.message
    with pytest.raises(AuthenticationError):
        await reloader.reload(ctx("wrong"))
    assert reloads(reloader, "failure") == 2
    # A provider option its factory refuses fails in the build, before anything changes.
    write(path, config_text(upstream.base_url).replace("provider: mock", "provider: nosuch"))
    done = await reloader.run("test")
    assert done.result == FAILURE and "backends[name=demo].provider: unknown provider" in done.error
    assert reloader.config_hash() == before


async def test_a_stream_started_before_a_reload_finishes_on_its_config(
    reloader: Reloader, path: Path, upstream: FakeOpenAI
) -> None:
    upstream.chunks, upstream.chunk_delay = 10, 0.05
    old = reloader.assembly
    old_provider = old.parts.providers["primary"]
    chunks: list[str] = []
    async with aclosing(reloader.engine.stream_chat_completion(params(), ctx())) as stream:
        first = await anext(stream)
        chunks.append(first.choices[0].delta.content)
        # primary changes (a longer read timeout): a new adapter for new calls; this stream keeps the old one.
        write(path, config_text(upstream.base_url).replace("read_timeout: 5s", "read_timeout: 6s"))
        done = await reloader.run("test")
        assert done.result == SUCCESS
        assert reloader.assembly.parts.providers["primary"] is not old_provider
        assert reloader.assembly.handover.rebuilt == ("primary",)
        chunks.extend([c.choices[0].delta.content async for c in stream if c.choices])
        assert old.parts.providers["primary"] is old_provider
    assert "".join(chunks) == "This is a reply from the fake OpenAI server to: "  # its 10 words, all of them
    assert upstream.completed_streams == 1
    # Its generation had one call: now done, the old assembly closes (its own adapter with it).
    for _ in range(50):
        if not reloader._retiring:
            break
        await asyncio.sleep(0.05)
    assert not reloader._retiring
    answer = await reloader.engine.create_chat_completion(params(), ctx())
    assert answer.choices[0].message.content


async def test_unchanged_backends_keep_their_pool_health_limits_and_cache(tmp_path: Path, upstream: FakeOpenAI) -> None:
    path = tmp_path / "tollgate.yaml"
    limits = "limits: {rules: [{per: model, match: {model: demo}, requests: 3, window: 1h}]}"
    health = "routing: {health: {consecutive_failures: 2, ejection_base: 1m}}"
    write(path, config_text(upstream.base_url, extra=f"{limits}\n{health}"))
    assembly = assemble(load_config(path, os.environ))
    await assembly.start()
    reloader = Reloader(assembly, str(path), os.environ)
    try:
        engine = reloader.engine
        await engine.create_chat_completion(params("gpt-4o-mini", "cache me"), ctx())  # cached
        for _ in range(2):
            await engine.create_chat_completion(params("demo"), ctx())  # 2 of the 3 allowed
        upstream.add_fault(Fault(status=500))
        upstream.add_fault(Fault(status=500))
        for _ in range(2):
            with pytest.raises(Exception):  # noqa: B017  # whatever the client sees: the target fails twice
                await engine.create_chat_completion(params("gpt-4o-mini", "fail"), ctx())
        report = {t.backend: t for t in (await engine.list_backends(ctx(ADMIN))).targets}
        assert report["primary"].state == "open"
        served = len(upstream.requests)

        # A new model on a new backend, listed first (the others move in the file): everything the old config had
        # is kept.
        text = config_text(upstream.base_url, extra=f"{limits}\n{health}")
        text = text.replace("backends:\n", "backends:\n  - {name: second, provider: mock}\n", 1)
        write(path, text + "  - {name: other, targets: [{backend: second}]}\n")
        done = await reloader.run("test")
        assert done.result == SUCCESS, done.error
        handover = reloader.assembly.handover
        assert set(handover.backends) == {"primary", "demo"} and handover.rebuilt == ("second",)
        assert handover.limiter and handover.cache and handover.health_targets >= 1
        assert reloader.assembly.parts.providers["primary"] is assembly.parts.providers["primary"]
        report = {t.backend: t for t in (await engine.list_backends(ctx(ADMIN))).targets}
        assert report["primary"].state == "open" and report["primary"].ejections_total == 1
        # The third request of the limit is admitted, the fourth is not: the count went on.
        await engine.create_chat_completion(params("demo"), ctx())
        with pytest.raises(RateLimitError):
            await engine.create_chat_completion(params("demo"), ctx())
        # The cached answer is still there: served without the (ejected) upstream.
        hit = ctx()
        await engine.create_chat_completion(params("gpt-4o-mini", "cache me"), hit)
        assert hit.reply.headers.get("x-tollgate-cache") == "hit"
        assert len(upstream.requests) == served
    finally:
        await reloader.close()


async def test_a_secret_file_is_read_again(tmp_path: Path, upstream: FakeOpenAI) -> None:
    secret = tmp_path / "openai-key"
    write(secret, "sk-upstream\n")
    path = tmp_path / "tollgate.yaml"
    write(path, config_text(upstream.base_url, key=f"${{file:{secret}}}"))
    assembly = assemble(load_config(path, os.environ))
    await assembly.start()
    reloader = Reloader(assembly, str(path), os.environ)
    try:
        await reloader.engine.create_chat_completion(params(), ctx())
        upstream.api_key = "sk-rotated"
        write(secret, "sk-rotated\n")
        done = await reloader.run("test")  # the file the config names changed, not the config file itself
        assert done.result == SUCCESS and reloader.assembly.handover.rebuilt == ("primary",)
        await reloader.engine.create_chat_completion(params("gpt-4o-mini", "again"), ctx())
        assert upstream.requests[-1].headers["authorization"] == "Bearer sk-rotated"
        secret.unlink()
        done = await reloader.run("test")
        assert done.result == FAILURE and "backends[0].api_key: cannot read the secret file" in done.error
    finally:
        await reloader.close()


async def test_a_configmap_symlink_swap_is_picked_up(tmp_path: Path, upstream: FakeOpenAI) -> None:
    # The layout Kubernetes mounts: tollgate.yaml -> ..data/tollgate.yaml, ..data -> ..2026_12_05_1 (swapped whole).
    mount = tmp_path / "config"
    mount.mkdir()
    first, second = mount / "..2026_12_05_1", mount / "..2026_12_05_2"
    first.mkdir()
    second.mkdir()
    (first / "tollgate.yaml").write_text(config_text(upstream.base_url))
    (second / "tollgate.yaml").write_text(
        config_text(upstream.base_url, extra_models="  - {name: swapped, targets: [{backend: demo}]}")
    )
    (mount / "..data").symlink_to(first.name)
    (mount / "tollgate.yaml").symlink_to("..data/tollgate.yaml")
    path = mount / "tollgate.yaml"
    assembly = assemble(load_config(path, os.environ))
    await assembly.start()
    reloader = Reloader(assembly, str(path), os.environ)
    reloader.start()
    try:
        before = reloader.config_hash()
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # the atomic rename the kubelet makes
        for _ in range(50):
            if reloader.config_hash() != before:
                break
            await asyncio.sleep(0.1)
        assert reloader.config_hash() != before
        assert "swapped" in [m.id for m in (await reloader.engine.list_models(ctx())).models]
    finally:
        await reloader.close()
