"""Access decided on what serves the request (issue 15), against the reference auth server: a key made with
`tollgate keys add --models 'allowed*' --deny forbidden` is never served, and never even planned onto, a model it may
not use, whichever path leads there (the name asked for, an alias, a route rule, a fallback, a context fallback, an
experiment arm, a decision from the prompt, a cached answer); `/v1/models` and `GET /v1/models/{id}` show only what
it can be served; embeddings and count_tokens the same. Through the HTTP door in one process and split, and through a
direct gRPC client of the engine. An unrestricted key of the same team shows each path does lead to `forbidden`.

The fake upstream echoes the provider model name as the answer's `model`, so each answer says what served it.
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest

from authsvc.keys_cli import add_key_commands
from authsvc.server import AuthServer, start_auth_server
from gateway.engine import experiments
from gateway.errors import GatewayError
from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

SECRET_PROMPT = "tell me the secret plan"  # the semantic rule's example for `forbidden`
CONTEXT_TOO_LONG = Fault(status=400, error_type="invalid_request_error", code="context_length_exceeded")


def config_text(auth: AuthServer, up: FakeOpenAI, small: FakeOpenAI, dead_port: int) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: {{server: "127.0.0.1:{auth.port}", timeout: 2s}}
routing: {{retry: {{attempt_timeout: 10s}}}}
backends:
  - {{name: up, provider: openai, base_url: "{up.base_url}", api_key: {UPSTREAM_KEY}, connect_timeout: 1s}}
  - {{name: small, provider: openai, base_url: "{small.base_url}", api_key: {UPSTREAM_KEY}, connect_timeout: 1s}}
  - {{name: down, provider: openai, base_url: "http://127.0.0.1:{dead_port}/v1", api_key: {UPSTREAM_KEY},
      connect_timeout: 1s}}
  - {{name: counter, provider: mock}}
routes:
  - {{name: to-forbidden, to: forbidden, match: {{model: allowed-route}}}}
  - {{name: upgrade, to: forbidden, match: {{model: allowed, headers: {{x-upgrade: "1"}}}}}}
  - {{name: long-prompts, to: forbidden, match: {{model: allowed-smart, prompt_tokens: {{min: 1}}}}}}
  - name: by-topic
    match: {{model: allowed-auto}}
    semantic:
      embedding_model: allowed-embed
      threshold: 0.9
      timeout: 2s
      choices:
        - {{to: forbidden, examples: ["{SECRET_PROMPT}"]}}
        - {{to: allowed-b, examples: ["write a poem about the sea"]}}
      default: allowed
models:
  - {{name: forbidden, aliases: [allowed-alias], targets: [{{backend: up, model: forbidden-up}}]}}
  - {{name: allowed, targets: [{{backend: up, model: allowed-up}}]}}
  - {{name: allowed-b, targets: [{{backend: up, model: allowed-b-up}}]}}
  - {{name: allowed-smart, targets: [{{backend: up, model: allowed-smart-up}}]}}
  - {{name: allowed-fallback, targets: [{{backend: down, model: gone}}], fallback: [forbidden]}}
  - {{name: allowed-context, targets: [{{backend: small, model: allowed-context-up}}], context_fallback: [forbidden]}}
  - name: allowed-trial
    targets: [{{backend: up, model: allowed-trial-up}}]
    experiment: {{name: trial, share: 0.5, key: "header:x-trial", targets: [{{backend: up, model: forbidden}}]}}
  - name: allowed-cached
    targets: [{{backend: small, model: allowed-cached-up}}]
    fallback: [forbidden]
    cache: {{scope: team}}
  - name: allowed-similar
    targets: [{{backend: small, model: allowed-similar-up}}]
    fallback: [forbidden]
    cache: {{scope: team, semantic: {{embedding_model: allowed-embed, threshold: 0.85}}}}
  - {{name: allowed-embed, targets: [{{backend: up, model: allowed-embed-up}}]}}
  - {{name: allowed-embed-fallback, targets: [{{backend: down, model: gone}}], fallback: [forbidden]}}
  - {{name: allowed-count, targets: [{{backend: up, model: allowed-count-up}}], fallback: [secret-counter]}}
  - {{name: secret-counter, targets: [{{backend: counter}}]}}
"""


LISTED = {
    "allowed",
    "allowed-b",
    "allowed-smart",
    "allowed-fallback",
    "allowed-context",
    "allowed-trial",
    "allowed-cached",
    "allowed-similar",
    "allowed-embed",
    "allowed-embed-fallback",
    "allowed-count",
}


@dataclass(frozen=True)
class Keys:
    restricted: str  # --models 'allowed*' --deny forbidden
    open: str  # every model; the same team, so the cache's team scope is shared


def add_key(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> str:
    """A key made with `tollgate keys add`, as an operator makes one (its parser and command, without the logging
    set-up of `gateway.cli.main`); the raw key it printed."""
    parser = argparse.ArgumentParser()
    add_key_commands(parser.add_subparsers())
    command = parser.parse_args(["keys", "add", "--file", str(path), "--team", "ml", *args])
    assert command.run(command) == 0
    raw = capsys.readouterr().out.strip()
    assert re.fullmatch(r"tgk_[0-9a-f]{16}_\S+", raw)
    return raw


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    gw: RunningGateway
    keys: Keys
    up: FakeOpenAI
    small: FakeOpenAI

    def forbidden_calls(self) -> int:
        """Requests that reached the upstream for `forbidden` (its target, or the trial's): tried, served or not."""
        models = [r.json.get("model") for r in self.up.requests if isinstance(r.json, dict)]
        return sum(1 for m in models if m in ("forbidden-up", "forbidden"))


@pytest.fixture
async def world(
    start_gateway: StartGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[World]:
    path = tmp_path / "keys.yaml"
    keys = Keys(
        restricted=add_key(capsys, path, "--user", "intern", "--models", "allowed*", "--deny", "forbidden"),
        open=add_key(capsys, path, "--user", "boss"),
    )
    auth = await start_auth_server(path, "127.0.0.1:0")
    try:
        async with FakeOpenAI(api_key=UPSTREAM_KEY, chunks=3) as up, FakeOpenAI(api_key=UPSTREAM_KEY) as small:
            up.word_embeddings = True
            gw = await start_gateway(config_text(auth, up, small, closed_port()))
            yield World(gw, keys, up, small)
    finally:
        await auth.stop(0)


@dataclass(frozen=True)
class Answer:
    status: int
    model: str = ""  # what served it (the upstream's model name)
    code: str = ""  # the error's machine code
    message: str = ""
    cache: str = ""  # the x-tollgate-cache header (HTTP only)


class Http:
    """The OpenAI-compatible HTTP door."""

    name = "http"

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw

    async def call(self, path: str, key: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Answer:
        sent = {"Authorization": f"Bearer {key}", **headers}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.gw.http_url + path, json=body, headers=sent) as response,
        ):
            payload = await response.json()
            cache = response.headers.get("x-tollgate-cache", "")
            if response.status != 200:
                error = payload["error"]
                return Answer(response.status, code=error.get("code") or "", message=error["message"])
            return Answer(200, payload.get("model", ""), cache=cache)

    async def chat(self, key: str, model: str, text: str = "hello", headers: Mapping[str, str] | None = None) -> Answer:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "temperature": 0}
        return await self.call("/v1/chat/completions", key, body, headers or {})

    async def stream(self, key: str, model: str, headers: Mapping[str, str] | None = None) -> Answer:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
        sent = {"Authorization": f"Bearer {key}", **(headers or {})}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.gw.http_url + "/v1/chat/completions", json=body, headers=sent) as response,
        ):
            text = await response.text()
            if response.status != 200:
                return Answer(response.status, code=_first(r'"code":\s*"(\w+)"', text))
            return Answer(200, _first(r'"model":\s*"([\w-]+)"', text))

    async def embed(self, key: str, model: str) -> Answer:
        return await self.call("/v1/embeddings", key, {"model": model, "input": "hello"}, {})

    async def count(self, key: str, model: str) -> Answer:
        body = {"model": model, "messages": [{"role": "user", "content": "count these words"}]}
        sent = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.gw.http_url + "/v1/messages/count_tokens", json=body, headers=sent) as response,
        ):
            payload = await response.json()
            if response.status != 200:
                return Answer(response.status, message=payload["error"]["message"])
            return Answer(200, str(payload["input_tokens"]))

    async def models(self, key: str) -> set[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.gw.http_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}) as response,
        ):
            assert response.status == 200
            return {m["id"] for m in (await response.json())["data"]}

    async def model(self, key: str, name: str) -> Answer:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.gw.http_url}/v1/models/{name}", headers={"Authorization": f"Bearer {key}"}) as r,
        ):
            payload = await r.json()
            if r.status != 200:
                return Answer(r.status, code=payload["error"].get("code") or "", message=payload["error"]["message"])
            return Answer(200, payload["id"])


def _first(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern} in {text!r}"
    return found.group(1)


class Grpc:
    """A direct gRPC client of the engine (`tollgate.gateway.v1.GatewayService`), with routing headers as metadata."""

    name = "grpc"

    def __init__(self, stub: pb_grpc.GatewayServiceStub) -> None:
        self.stub = stub

    @staticmethod
    def _metadata(key: str, headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"), *(headers or {}).items())

    @staticmethod
    def _failed(exc: grpc.aio.AioRpcError) -> Answer:
        error = GatewayError.from_metadata(exc.code(), exc.details() or "", exc.trailing_metadata() or ())
        return Answer(error.http_status, code=error.code, message=error.message)

    async def chat(self, key: str, model: str, text: str = "hello", headers: Mapping[str, str] | None = None) -> Answer:
        params = pb.ChatCompletionParams(
            model=model, messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)], temperature=0
        )
        try:
            reply = await self.stub.CreateChatCompletion(
                pb.CreateChatCompletionRequest(params=params), metadata=self._metadata(key, headers)
            )
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc)
        return Answer(200, reply.model)

    async def stream(self, key: str, model: str, headers: Mapping[str, str] | None = None) -> Answer:
        params = pb.ChatCompletionParams(model=model, messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello")])
        call = self.stub.StreamChatCompletion(
            pb.StreamChatCompletionRequest(params=params), metadata=self._metadata(key, headers)
        )
        try:
            models = {chunk.model async for chunk in call}
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc)
        (served,) = models
        return Answer(200, served)

    async def embed(self, key: str, model: str) -> Answer:
        try:
            reply = await self.stub.CreateEmbeddings(
                pb.CreateEmbeddingsRequest(model=model, input=["hello"]), metadata=self._metadata(key, None)
            )
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc)
        return Answer(200, reply.model)

    async def count(self, key: str, model: str) -> Answer:
        params = pb.ChatCompletionParams(
            model=model, messages=[pb.ChatMessage(role=pb.ROLE_USER, content="count these words")], max_tokens=1
        )
        try:
            reply = await self.stub.CountTokens(
                pb.CountTokensRequest(params=params), metadata=self._metadata(key, None)
            )
        except grpc.aio.AioRpcError as exc:
            return self._failed(exc)
        return Answer(200, str(reply.input_tokens))

    async def models(self, key: str) -> set[str]:
        reply = await self.stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata(key, None))
        return {m.id for m in reply.models}


Door = Http | Grpc


@pytest.fixture
async def doors(world: World) -> AsyncIterator[list[Door]]:
    async with grpc.aio.insecure_channel(world.gw.grpc_address) as channel:
        yield [Http(world.gw), Grpc(pb_grpc.GatewayServiceStub(channel))]


def in_treatment() -> str:
    """An `x-trial` value whose requests are in the trial's treatment arm."""
    return next(v for v in (f"session-{i}" for i in range(200)) if experiments.bucket("trial", v) < 0.5)


REFUSED = Answer(403, code="model_not_allowed")

# (what leads there, model, prompt, headers, what the restricted key gets); the open key is served by `forbidden`
PATHS: list[tuple[str, str, str, dict[str, str], Answer | str]] = [
    ("the name asked for", "forbidden", "hello", {}, REFUSED),
    ("an alias", "allowed-alias", "hello", {}, REFUSED),
    ("a route rule (a name only the rule serves)", "allowed-route", "hello", {}, REFUSED),
    ("a route rule on a model it may use (passed over)", "allowed", "hello", {"x-upgrade": "1"}, "allowed-up"),
    ("a prompt matcher", "allowed-smart", "hello", {}, "allowed-smart-up"),
    (
        "a semantic decision (no candidate it may not use)",
        "allowed-auto",
        SECRET_PROMPT,
        {},
        "allowed-up",
    ),
    (
        "an experiment arm (it stays in control)",
        "allowed-trial",
        "hello",
        {"x-trial": in_treatment()},
        "allowed-trial-up",
    ),
]


async def test_the_rows_of_the_issue(world: World) -> None:
    """Issue 15's table, the access rows, as the attacker sent them (the official SDK, the restricted key)."""
    client = openai.AsyncOpenAI(base_url=world.gw.base_url, api_key=world.keys.restricted, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    async with client:
        for model in (
            "forbidden",
            "allowed-alias",
            "allowed-route",
        ):  # was: 403, 200 from forbidden, 200 from forbidden
            with pytest.raises(openai.PermissionDeniedError) as denied:
                await client.chat.completions.create(model=model, messages=messages)
            assert denied.value.code == "model_not_allowed"
        listed = {m.id async for m in client.models.list()}
        assert "allowed-alias" not in listed and "forbidden" not in listed  # was: the alias listed
        with pytest.raises(openai.APIStatusError) as failed:  # was: 200, served by forbidden
            await client.chat.completions.create(model="allowed-fallback", messages=messages)
        assert failed.value.status_code in (502, 503)
    assert world.forbidden_calls() == 0


async def test_each_path_to_a_forbidden_model_is_closed_to_the_restricted_key(world: World, doors: list[Door]) -> None:
    for door in doors:
        for what, model, text, headers, expected in PATHS:
            got = await door.chat(world.keys.restricted, model, text, headers)
            if isinstance(expected, Answer):
                assert (got.status, got.code) == (expected.status, expected.code), f"{door.name}: {what}"
                assert f"'{model}'" in got.message and "'forbidden'" not in got.message.replace(f"'{model}'", "")
            else:
                assert (got.status, got.model) == (200, expected), f"{door.name}: {what}"
    for door in doors:
        assert (await door.stream(world.keys.restricted, "allowed-alias")).code == "model_not_allowed", door.name
        streamed = await door.stream(world.keys.restricted, "allowed", {"x-upgrade": "1"})
        assert streamed.model == "allowed-up", door.name
    assert world.forbidden_calls() == 0, "never even tried for the restricted key"
    # The same paths do lead to `forbidden` for a key that may use it.
    trial = "forbidden"  # the trial's target is the upstream model `forbidden` itself
    for door in doors:
        for what, model, text, headers, _ in PATHS:
            got = await door.chat(world.keys.open, model, text, headers)
            served = trial if model == "allowed-trial" else "forbidden-up"
            assert (got.status, got.model) == (200, served), f"{door.name}: {what}"
    assert world.forbidden_calls() == 2 * len(PATHS)


async def test_a_fallback_the_key_may_not_use_is_skipped(world: World, doors: list[Door]) -> None:
    # `allowed-fallback`'s only target is down; its fallback is `forbidden`. The restricted key gets the failure of
    # what it may use (a 5xx about the upstream, not an access error), never an answer from `forbidden`.
    for door in doors:
        got = await door.chat(world.keys.restricted, "allowed-fallback")
        assert got.status in (502, 503) and got.code != "model_not_allowed", f"{door.name}: {got}"
        assert "forbidden" not in got.message
        got = await door.embed(world.keys.restricted, "allowed-embed-fallback")
        assert got.status in (502, 503), f"{door.name}: {got}"
    assert world.forbidden_calls() == 0
    for door in doors:
        assert (await door.chat(world.keys.open, "allowed-fallback")).model == "forbidden-up", door.name
        assert (await door.embed(world.keys.open, "allowed-embed-fallback")).model == "forbidden-up", door.name


async def test_a_context_fallback_the_key_may_not_use_is_skipped(world: World, doors: list[Door]) -> None:
    for door in doors:
        world.small.add_fault(CONTEXT_TOO_LONG)
        got = await door.chat(world.keys.restricted, "allowed-context")
        assert (got.status, got.code) == (400, "context_length_exceeded"), f"{door.name}: the model's own answer"
    assert world.forbidden_calls() == 0
    for door in doors:
        world.small.add_fault(CONTEXT_TOO_LONG)
        assert (await door.chat(world.keys.open, "allowed-context")).model == "forbidden-up", door.name


async def test_a_cached_answer_is_served_only_to_keys_that_may_use_the_model_that_produced_it(world: World) -> None:
    http = Http(world.gw)
    # The open key's request: its model's target fails, the fallback `forbidden` answers, and the answer is cached
    # in the team's scope, which the restricted key shares.
    world.small.add_fault(Fault(status=500))
    first = await http.chat(world.keys.open, "allowed-cached")
    assert (first.model, first.cache) == ("forbidden-up", "miss")
    assert (await http.chat(world.keys.open, "allowed-cached")).cache == "hit"
    # The restricted key asks the same: a miss (the stored answer came from `forbidden`), answered by its own model,
    # whose answer takes the key's place.
    got = await http.chat(world.keys.restricted, "allowed-cached")
    assert (got.status, got.model, got.cache) == (200, "allowed-cached-up", "miss")
    again = await http.chat(world.keys.restricted, "allowed-cached")
    assert (again.model, again.cache) == ("allowed-cached-up", "hit")
    assert (await http.chat(world.keys.open, "allowed-cached")).model == "allowed-cached-up"


async def test_a_similar_cached_answer_is_served_only_to_keys_that_may_use_the_model_that_produced_it(
    world: World,
) -> None:
    http = Http(world.gw)
    world.small.add_fault(Fault(status=500))
    first = await http.chat(world.keys.open, "allowed-similar", "please say hello to the whole team")
    assert (first.model, first.cache) == ("forbidden-up", "miss")
    # Worded alike (7 of 8 words): a semantic hit for the key that may use `forbidden`…
    alike = await http.chat(world.keys.open, "allowed-similar", "please say hello to the whole team now")
    assert (alike.model, alike.cache) == ("forbidden-up", "hit")
    # …and a miss for the one that may not, answered by its own model.
    got = await http.chat(world.keys.restricted, "allowed-similar", "please say hello to the whole team today")
    assert (got.status, got.model, got.cache) == (200, "allowed-similar-up", "miss")


async def test_the_model_list_shows_only_what_the_key_can_be_served(world: World, doors: list[Door]) -> None:
    for door in doors:
        assert await door.models(world.keys.restricted) == LISTED, f"{door.name}: no alias of a forbidden model"
        assert await door.models(world.keys.open) >= {"forbidden", "allowed-alias", "secret-counter", *LISTED}
    http = Http(world.gw)
    assert (await http.model(world.keys.restricted, "allowed")).model == "allowed"
    for name in ("allowed-alias", "forbidden", "allowed-route", "no-such-model"):
        got = await http.model(world.keys.restricted, name)
        # The same 404 as for a model that does not exist: whether it does is not told.
        assert (got.status, got.code, got.message) == (404, "model_not_found", f"The model '{name}' does not exist")
    assert (await http.model(world.keys.open, "allowed-alias")).model == "allowed-alias"


async def test_embeddings_and_token_counts_follow_the_same_rule(world: World, doors: list[Door]) -> None:
    for door in doors:
        assert (await door.embed(world.keys.restricted, "allowed-alias")).status == 403, door.name
        assert (await door.embed(world.keys.restricted, "allowed-embed")).model == "allowed-embed-up", door.name
        assert (await door.count(world.keys.restricted, "allowed-alias")).status == 403, door.name
        # `allowed-count`'s only backend that counts is its fallback's, which the key may not use.
        got = await door.count(world.keys.restricted, "allowed-count")
        assert got.status == 400 and "no backend that can count" in got.message, f"{door.name}: {got}"
        counted = await door.count(world.keys.open, "allowed-count")
        assert counted.status == 200 and int(counted.model) > 0, door.name
        assert (await door.embed(world.keys.open, "allowed-alias")).model == "forbidden-up", door.name
