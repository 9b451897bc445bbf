"""The wake wrapper's own behaviour, against in-process fake backends: one wake per fleet through a real Redis,
the idle action putting a backend back to sleep (and the next call waking it), an active probe of a sleeping backend,
and the `wake:` configuration's errors."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest

from gateway.config import BackendConfig, ConfigError, parse_config
from gateway.config.routing_wake import IdleConfig, WakeAction, WakeConfig
from gateway.providers.base import collect
from gateway.providers.capabilities import RERANK, serves
from gateway.providers.openai_compat import OpenAICompatibleProvider
from gateway.providers.registry import build_providers
from gateway.providers.wake import RedisFleetLock, Waker, WakingProvider
from gateway.testing.endpoint_replies import speech_bytes
from gateway.testing.fake_openai import FakeOpenAI
from tests.e2e.test_auth_stats import eventually
from tollgate.gateway.v1 import endpoints_pb2 as ep
from tollgate.gateway.v1 import gateway_pb2 as pb

PARAMS = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sleeper(name: str, port: int, wake: WakeConfig) -> BackendConfig:
    return BackendConfig(name=name, provider="vllm", base_url=f"http://127.0.0.1:{port}/v1", wake=wake)


def counting(path: Path, word: str = "woke") -> WakeAction:
    return WakeAction(command=("sh", "-c", f"echo {word} >> {path}"))


async def boot_later(fake: FakeOpenAI, port: int, delay: float) -> None:
    await asyncio.sleep(delay)
    await fake.start(port=port)


async def test_two_replicas_sharing_redis_wake_once(redis_url: str, tmp_path: Path) -> None:
    port, name, log = free_port(), f"sleepy-{uuid4().hex[:8]}", tmp_path / "wakes"
    wake = WakeConfig(action=counting(log), timeout=10.0, poll_interval=0.05)
    backend = sleeper(name, port, wake)
    locks = [RedisFleetLock(redis_url), RedisFleetLock(redis_url)]
    replicas = [WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake, lock)) for lock in locks]
    fake = FakeOpenAI(chunks=2)
    try:
        booting = asyncio.create_task(boot_later(fake, port, 0.5))
        calls = [replica.complete("m", PARAMS) for replica in replicas for _ in range(3)]
        replies = await asyncio.gather(*calls)
        await booting
        assert all(r.choices for r in replies)
        assert log.read_text().splitlines() == ["woke"]
        assert sorted(r.waker.wakes for r in replicas) == [0, 1]
    finally:
        for replica in replicas:
            await replica.close()
        await fake.stop()


async def test_idle_puts_it_to_sleep_and_the_next_call_wakes_it(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "actions"
    idle = IdleConfig(after=0.3, action=counting(log, "slept"))
    wake = WakeConfig(action=counting(log), timeout=10.0, poll_interval=0.05, idle=idle)
    backend = sleeper("sleepy", port, wake)
    provider = WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake))
    fake = FakeOpenAI(chunks=2)
    await fake.start(port=port)
    try:
        assert (await provider.complete("m", PARAMS)).choices  # up already: no wake
        assert not log.exists()
        # The idle watch sets `asleep` once its action has finished: "slept" is written by then.
        await eventually(lambda: provider.waker.asleep)
        assert log.read_text().splitlines() == ["slept"]
        # Put to sleep: the next call runs the wake action (here the server never stopped, so it is ready at once).
        assert (await provider.complete("m", PARAMS)).choices
        # Closed at once (no await since the call ended, so the idle watch cannot have run): no second "slept" can
        # follow, however slow the machine. The wake action is started, not awaited (readiness decides), and is
        # left running by close: its echo may land later.
        await provider.close()
        await eventually(lambda: len(log.read_text().splitlines()) == 2)
        assert log.read_text().splitlines() == ["slept", "woke"]
    finally:
        await provider.close()
        await fake.stop()


async def test_a_sleeping_backend_probes_healthy_and_is_then_known_asleep(tmp_path: Path) -> None:
    wake = WakeConfig(action=counting(tmp_path / "w"), timeout=1.0)
    backend = sleeper("sleepy", free_port(), wake)
    provider = WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake))
    try:
        await provider.probe()
        assert provider.waker.asleep
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("wake", "message"),
    [
        ("{command: [a], http: {url: 'http://x'}}", "backends[0].wake: needs exactly one of"),
        ("{timeout: 5s}", "backends[0].wake: needs exactly one of"),
        ("{command: [a], ready_path: health}", "backends[0].wake.ready_path: expected a path starting with '/'"),
        ("{kubernetes: {deployment: d}}", "backends[0].wake.kubernetes.namespace: required"),
        ("{kubernetes: {namespace: n, deployment: d, replicas: -1}}", "backends[0].wake.kubernetes.replicas"),
        ("{http: {url: 'http://x', method: BREW}}", "backends[0].wake.http.method: expected one of"),
        ("{command: [a], idle: {command: [b]}}", "backends[0].wake.idle.after: required"),
        ("{command: [a], max_waiting: 0}", "backends[0].wake.max_waiting"),
        ("{command: [a], colour: red}", "backends[0].wake.colour"),
    ],
)
def test_bad_wake_config_names_the_field(wake: str, message: str) -> None:
    text = f"backends: [{{name: b, provider: vllm, base_url: 'http://127.0.0.1:1/v1', wake: {wake}}}]\n"
    text += "models: [{name: m, targets: [{backend: b}]}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    assert str(caught.value).startswith(message), str(caught.value)


def test_wake_needs_a_base_url() -> None:
    text = "backends: [{name: b, provider: openai, wake: {command: [a]}}]\nmodels: [{name: m, targets: [{backend: b}]}]"
    with pytest.raises(ConfigError, match=r"backends\[name=b\].wake: needs the backend's base_url"):
        build_providers(parse_config(text, {}))


def test_the_issue_configuration_reads() -> None:
    text = """
backends:
  - name: local-vllm
    provider: vllm
    base_url: http://127.0.0.1:8000/v1
    wake:
      command: [systemctl, start, vllm]
      timeout: 120s
      ready_path: /v1/models
      max_waiting: 1000
      idle: {after: 15m, command: [systemctl, stop, vllm]}
models: [{name: m, targets: [{backend: local-vllm}]}]
"""
    wake = parse_config(text, {}).backends[0].wake
    assert wake is not None and wake.action.command == ("systemctl", "start", "vllm")
    assert (wake.timeout, wake.ready_path, wake.max_waiting) == (120.0, "/v1/models", 1000)
    assert wake.idle is not None and wake.idle.after == 900.0
    assert wake.idle.action.command == ("systemctl", "stop", "vllm")


async def test_the_endpoints_beside_chat_wait_for_a_sleeping_backend_too(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "wakes"
    wake = WakeConfig(action=counting(log), timeout=10.0, poll_interval=0.05)
    backend = sleeper("sleepy-endpoints", port, wake)
    provider = WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake))
    assert serves(provider, RERANK)
    fake = FakeOpenAI(chunks=2)
    try:
        booting = asyncio.create_task(boot_later(fake, port, 0.3))
        reranked = await provider.rerank("m", ep.RerankRequest(query="fox", documents=["dog", "fox"]))
        await booting
        assert reranked.results[0].index == 1
        audio = [p async for p in provider.speak("tts-1", ep.StreamSpeechRequest(input="hi", voice="v"))]
        assert b"".join(p.audio for p in audio) == speech_bytes("hi")
        assert log.read_text().splitlines() == ["woke"]
    finally:
        await provider.close()
        await fake.stop()


async def test_a_sleeping_backend_is_woken_to_continue_an_answer(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "wakes"
    wake = WakeConfig(action=counting(log), timeout=10.0, poll_interval=0.05)
    backend = replace(sleeper("sleepy", port, wake), continuation="vllm")
    provider = WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake))
    fake = FakeOpenAI(chunks=6)
    try:
        booting = asyncio.create_task(boot_later(fake, port, 0.3))
        answer = await collect(provider.continue_stream("m", PARAMS, "This is a "))
        await booting
        assert answer.choices[0].message.content == "reply from the ", "the last three of its six words"
        assert log.read_text().splitlines() == ["woke"]
        assert fake.requests[-1].json["continue_final_message"] is True
    finally:
        await provider.close()
        await fake.stop()
