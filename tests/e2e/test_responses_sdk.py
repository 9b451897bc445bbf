"""The official `openai` SDK's Responses API, unchanged, against tollgate: in one process and split over gRPC.

Three models: `gpt-4o-mini` on an OpenAI backend (called with the Responses API itself), `chat-model` on an
OpenAI-compatible chat backend (the same fake, reached through chat completions: the translated path) and `demo`
on the built-in mock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, Fault
from tests.conftest import UPSTREAM_KEY, RunningGateway, StartGateway

REPLY = "This is a reply from the fake OpenAI "  # the fake's answer in 8 one-word pieces
TOOLS: Any = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}},
    }
]
MODELS = ("gpt-4o-mini", "chat-model")  # native, translated


def config(upstream_url: str) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
server: {{max_body: 256KiB, shutdown_grace: 1s, drain_delay: 0s}}
responses: {{ttl: 1h, max_items: 100}}
backends:
  - {{name: primary, provider: openai, base_url: "{upstream_url}", api_key: {UPSTREAM_KEY}, read_timeout: 5s}}
  - {{name: compat, provider: vllm, base_url: "{upstream_url}", api_key: {UPSTREAM_KEY}, read_timeout: 5s}}
  - {{name: demo, provider: mock, options: {{chunks: 5}}}}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: primary, model: gpt-4o-mini}}]}}
  - {{name: chat-model, targets: [{{backend: compat, model: gpt-4o-mini}}]}}
  - {{name: demo, targets: [{{backend: demo, model: tollgate-demo}}]}}
  - {{name: with-fallback, targets: [{{backend: primary, model: gpt-4o-mini}}], fallback: [chat-model]}}
  - {{name: cached-chat, targets: [{{backend: compat, model: gpt-4o-mini}}], cache: {{ttl: 1m}}}}
"""


@pytest.fixture
async def gateway(start_gateway: StartGateway, upstream: FakeOpenAI) -> RunningGateway:
    return await start_gateway(config(upstream.base_url))


def client(gateway: RunningGateway, key: str = "sk-client") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=10)


def last_request(upstream: FakeOpenAI, path: str) -> Any:
    return next(r.json for r in reversed(upstream.requests) if r.path == path)


@pytest.mark.parametrize("model", MODELS)
async def test_create(gateway: RunningGateway, upstream: FakeOpenAI, model: str) -> None:
    raw = await client(gateway).responses.with_raw_response.create(
        model=model, input="hello there", instructions="Be brief.", temperature=0.5
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and "fake" not in response.id  # the gateway's id, never the backend's
    assert response.status == "completed"
    assert response.output_text == REPLY
    assert response.instructions == "Be brief." and response.temperature == 0.5
    assert response.usage is not None and response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    assert raw.headers["x-request-id"].startswith("req_")
    if model == "gpt-4o-mini":  # the Responses API upstream, statelessly
        sent = last_request(upstream, "/v1/responses")
        assert sent["input"] == "hello there" and sent["instructions"] == "Be brief."
        assert sent["store"] is False and "stream" not in sent and "previous_response_id" not in sent
    else:  # chat completions upstream
        sent = last_request(upstream, "/v1/chat/completions")
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"},
        ]
        assert sent["temperature"] == 0.5


@pytest.mark.parametrize("model", [*MODELS, "demo"])
async def test_stream(gateway: RunningGateway, model: str) -> None:
    stream = await client(gateway).responses.create(model=model, input="hello there", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == text and done.status == "completed"
    assert done.id == events[0].response.id  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.output_tokens == (5 if model == "demo" else 8)


@pytest.mark.parametrize("model", MODELS)
async def test_function_tool_round_trip(gateway: RunningGateway, upstream: FakeOpenAI, model: str) -> None:
    api = client(gateway)
    first = await api.responses.create(model=model, input="hello there", tools=TOOLS)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "lookup"
    assert json.loads(call.arguments) == {"echo": "hello there"}
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "found it"}
    second = await api.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[output],
        tools=TOOLS,  # type: ignore[list-item]
    )
    assert second.output_text == REPLY and second.previous_response_id == first.id
    if model == "gpt-4o-mini":
        sent = last_request(upstream, "/v1/responses")["input"]
        assert [item.get("type") for item in sent] == ["message", "function_call", "function_call_output"]
        assert sent[1]["call_id"] == call.call_id and sent[2]["output"] == "found it"
    else:
        sent = last_request(upstream, "/v1/chat/completions")["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "found it",
        }


@pytest.mark.parametrize("model", MODELS)
async def test_streamed_function_call(gateway: RunningGateway, model: str) -> None:
    stream = await client(gateway).responses.create(model=model, input="hello there", tools=TOOLS, stream=True)
    events = [event async for event in stream]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"echo": "hello there"}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == arguments  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[-1].type == "function_call" and final.output[-1].arguments == arguments  # type: ignore[union-attr]


@pytest.mark.parametrize("model", MODELS)
async def test_previous_response_id_carries_the_conversation(
    gateway: RunningGateway, upstream: FakeOpenAI, model: str
) -> None:
    api = client(gateway)
    first = await api.responses.create(model=model, input="hello there", instructions="Be brief.")
    second = await api.responses.create(model=model, input="and again", previous_response_id=first.id)
    assert second.output_text.startswith("This is a reply")
    if model == "gpt-4o-mini":
        sent = last_request(upstream, "/v1/responses")
        assert "instructions" not in sent  # as OpenAI: instructions do not carry over
        assert [(i.get("role"), i["type"]) for i in sent["input"]] == [
            ("user", "message"),
            ("assistant", "message"),
            ("user", "message"),
        ]
    else:
        sent = last_request(upstream, "/v1/chat/completions")
        assert sent["messages"] == [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "and again"},
        ]


async def test_retrieve_and_delete(gateway: RunningGateway) -> None:
    api = client(gateway)
    made = await api.responses.create(model="gpt-4o-mini", input="hello there")
    got = await api.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text and got.status == "completed"
    assert got.usage is not None and got.usage.output_tokens == 8
    await api.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await api.responses.retrieve(made.id)
    assert caught.value.body["param"] == "response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await api.responses.delete(made.id)


async def test_another_key_gets_404(gateway: RunningGateway) -> None:
    mine, theirs = client(gateway, "sk-alice"), client(gateway, "sk-mallory")
    made = await mine.responses.create(model="chat-model", input="hello there")
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await theirs.responses.create(model="chat-model", input="hi", previous_response_id=made.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.delete(made.id)
    assert (await mine.responses.retrieve(made.id)).id == made.id  # still there for its owner


async def test_store_false_keeps_nothing(gateway: RunningGateway) -> None:
    api = client(gateway)
    made = await api.responses.create(model="gpt-4o-mini", input="hello there", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(made.id)


async def test_reasoning_summary_streams_through(gateway: RunningGateway) -> None:
    stream = await client(gateway).responses.create(
        model="gpt-4o-mini", input="hello there", reasoning={"effort": "low", "summary": "auto"}, stream=True
    )
    events = [event async for event in stream]
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "Thinking about: hello there "
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "reasoning" and final.reasoning is not None
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 4


@pytest.mark.parametrize("model", MODELS)
async def test_bad_input_is_a_400_naming_the_field(gateway: RunningGateway, model: str) -> None:
    api = client(gateway)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": "hi", "temperature": 3}, "temperature"),
        ({"input": []}, "input"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.responses.create(model=model, **body)
        assert caught.value.body["param"] == param, body  # type: ignore[index]
        assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await api.responses.create(model=model, input="hi", previous_response_id="resp_nope")


async def test_built_in_tools_need_a_responses_backend(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    api = client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        await api.responses.create(model="chat-model", input="hi", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    # An OpenAI backend gets it unchanged.
    await api.responses.create(model="gpt-4o-mini", input="hi", tools=[{"type": "web_search"}], include=["x"])
    sent = last_request(upstream, "/v1/responses")
    assert sent["tools"] == [{"type": "web_search"}] and sent["include"] == ["x"]


async def test_unknown_model_is_a_404(gateway: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client(gateway).responses.create(model="no-such-model", input="hi")
    assert caught.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failed_responses_backend_falls_back_to_a_chat_one(
    gateway: RunningGateway, upstream: FakeOpenAI, stream: bool
) -> None:
    upstream.add_fault(Fault(status=500, path="/v1/responses"))
    api = client(gateway)
    if stream:
        events = [e async for e in await api.responses.create(model="with-fallback", input="hello there", stream=True)]
        response = events[-1].response  # type: ignore[union-attr]
    else:
        response = await api.responses.create(model="with-fallback", input="hello there")
    assert response.status == "completed" and response.output_text == REPLY
    assert [r.path for r in upstream.requests[-2:]] == ["/v1/responses", "/v1/chat/completions"]
    assert (await api.responses.retrieve(response.id)).output_text == REPLY


async def test_a_stream_cut_after_its_first_bytes_ends_with_an_error_event(
    start_gateway: StartGateway, upstream: FakeOpenAI
) -> None:
    # A stall (as tests/e2e/test_http_errors.py's for chat), so the count is exact: after a reset, the upstream
    # client raises its payload error before the events still in its buffer are read, which a slower reader (the
    # gRPC hop) sees more often; chat streams behave the same.
    gateway = await start_gateway(config(upstream.base_url).replace("read_timeout: 5s", "read_timeout: 300ms"))
    upstream.add_fault(Fault(stall_after_chunks=3, path="/v1/responses"))
    api = client(gateway)
    events = [e async for e in await api.responses.create(model="gpt-4o-mini", input="hello there", stream=True)]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 3 and events[-1].type == "error"
    assert events[-1].code == "upstream_timeout"  # type: ignore[union-attr]
    assert events[-1].sequence_number == events[-2].sequence_number + 1


@pytest.mark.parametrize("model", MODELS)
async def test_a_streamed_response_is_stored_before_its_last_event(gateway: RunningGateway, model: str) -> None:
    body = {"model": model, "input": "hello there", "stream": True}
    headers = {"Authorization": "Bearer sk-client"}  # the owner: the same key as the SDK client's below
    url = f"{gateway.base_url}/responses"
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as resp:
        async for line in resp.content:
            if line.startswith(b"data: ") and b'"response.completed"' in line:
                made = json.loads(line[6:])["response"]
                break
        # The client left at the completed event: the response is there already.
    assert (await client(gateway).responses.retrieve(made["id"])).output_text == REPLY


async def test_azure_is_called_at_its_v1_responses_path(start_gateway: StartGateway) -> None:
    async with FakeOpenAI(chunks=8) as fake:
        root = fake.base_url.removesuffix("/v1")  # the fake's root stands for an Azure resource's endpoint
        gateway = await start_gateway(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - {{name: az, provider: azure, base_url: "{root}", api_key: az-secret, read_timeout: 5s}}
models:
  - {{name: gpt-4o-mini, targets: [{{backend: az, model: my-deployment}}]}}
""")
        api = client(gateway)
        whole = await api.responses.create(model="gpt-4o-mini", input="hello there", tools=[{"type": "web_search"}])
        events = [e async for e in await api.responses.create(model="gpt-4o-mini", input="hello there", stream=True)]
        assert whole.output_text == REPLY and events[-1].response.output_text == REPLY  # type: ignore[union-attr]
        sent = [r for r in fake.requests if r.path == "/openai/v1/responses"]
        assert len(sent) == 2 and all(r.headers["api-key"] == "az-secret" for r in sent)
        assert sent[0].json["model"] == "my-deployment" and sent[0].json["tools"] == [{"type": "web_search"}]


async def test_a_translated_call_takes_the_chat_flow_cache_included(
    gateway: RunningGateway, upstream: FakeOpenAI
) -> None:
    api = client(gateway)
    statuses, ids = [], set()
    for _ in range(2):
        raw = await api.responses.with_raw_response.create(model="cached-chat", input="hello there", temperature=0)
        statuses.append(raw.headers["x-tollgate-cache"])
        ids.add(raw.parse().id)
    assert statuses == ["miss", "hit"] and len(ids) == 2  # the answer is the cache's, the response a new one
    assert sum(1 for r in upstream.requests if r.path == "/v1/chat/completions") == 1


@pytest.mark.parametrize("model", MODELS)
async def test_a_client_that_leaves_cancels_the_upstream_call(
    gateway: RunningGateway, upstream: FakeOpenAI, model: str
) -> None:
    upstream.chunks, upstream.chunk_delay = 200, 0.02
    body = {"model": model, "input": "hello there", "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{gateway.base_url}/responses", json=body)
        await resp.content.readline()
        resp.close()  # the client goes away mid-stream
    for _ in range(100):
        if upstream.disconnects:
            break
        await asyncio.sleep(0.02)
    assert upstream.disconnects == 1 and upstream.completed_streams == 0


async def test_limits_apply_on_both_paths(start_gateway: StartGateway, upstream: FakeOpenAI) -> None:
    limits = "limits: {rules: [{per: global, requests: 2, window: 1m}]}\nmodels:"
    gateway = await start_gateway(config(upstream.base_url).replace("models:", limits, 1))
    api = client(gateway)
    await api.responses.create(model="gpt-4o-mini", input="hi")  # the Responses API upstream
    await api.responses.create(model="chat-model", input="hi")  # the chat flow
    for model in MODELS:
        with pytest.raises(openai.RateLimitError) as caught:
            await api.responses.create(model=model, input="hi")
        assert caught.value.response.headers["retry-after"]


async def test_no_key_is_the_anonymous_owner(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.base_url}/responses", json={"model": "demo", "input": "hi"}) as resp:
            made = await resp.json()
        async with session.get(f"{gateway.base_url}/responses/{made['id']}") as resp:
            assert resp.status == 200 and (await resp.json())["id"] == made["id"]
    with pytest.raises(openai.NotFoundError):  # a key is someone else
        await client(gateway).responses.retrieve(made["id"])


async def test_input_items_list_the_conversation(gateway: RunningGateway) -> None:
    api = client(gateway)
    first = await api.responses.create(model="chat-model", input="hello there")
    second = await api.responses.create(model="gpt-4o-mini", input="and again", previous_response_id=first.id)
    items = [item async for item in api.responses.input_items.list(second.id)]  # newest first, as OpenAI
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert items[0].content[0].text == "and again" and items[2].content[0].type == "input_text"  # type: ignore[union-attr]
    assert items[1].id == first.output[0].id and len({i.id for i in items}) == 3
    again = [item.id async for item in api.responses.input_items.list(second.id)]
    assert again == [i.id for i in items]  # ids are stable
    page = await api.responses.input_items.list(second.id, limit=2, order="asc")
    assert [i.id for i in page.data] == [items[2].id, items[1].id] and page.has_more
    rest = await api.responses.input_items.list(second.id, limit=2, order="asc", after=page.data[-1].id)
    assert [i.id for i in rest.data] == [items[0].id] and not rest.has_more
    for query, param in (({"limit": 101}, "limit"), ({"order": "up"}, "order"), ({"after": "nope"}, "after")):
        with pytest.raises(openai.BadRequestError) as caught:
            await api.responses.input_items.list(second.id, **query)  # type: ignore[arg-type]
        assert caught.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client(gateway, "sk-mallory").responses.input_items.list(second.id)
