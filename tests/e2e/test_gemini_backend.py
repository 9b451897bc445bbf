"""The official `openai` SDK → tollgate → a Gemini backend (the in-repo fake), in one process and split over gRPC."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from gateway.testing.fake_gemini import MODEL_VERSION, FakeGemini
from tests.conftest import RunningGateway, StartGateway

GEMINI_KEY = "gemini-upstream-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=GEMINI_KEY).running() as fake:
        yield fake


@pytest.fixture
async def gateway(start_gateway: StartGateway, gemini: FakeGemini) -> RunningGateway:
    return await start_gateway(f"""
listen: {{http: "127.0.0.1:0", grpc: "127.0.0.1:0"}}
auth: none
backends:
  - {{name: google, provider: gemini, base_url: "{gemini.base_url}", api_key: {GEMINI_KEY}, read_timeout: 5s}}
models:
  - {{name: flash, targets: [{{backend: google, model: gemini-2.0-flash}}]}}
  - {{name: embed, targets: [{{backend: google, model: text-embedding-004}}]}}
""")


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-client", max_retries=0, timeout=10)


async def test_completion(gateway: RunningGateway, gemini: FakeGemini) -> None:
    completion = await client(gateway).chat.completions.create(
        model="flash", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "Gemini says: hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL_VERSION
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    sent = gemini.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


async def test_stream_with_usage(gateway: RunningGateway, gemini: FakeGemini) -> None:
    stream = await client(gateway).chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "hello there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Gemini says: hello there"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4  # one chunk per word, as sent
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert gemini.requests[-1].query == {"alt": "sse"}


async def test_streamed_tool_call_round_trip(gateway: RunningGateway, gemini: FakeGemini) -> None:
    sdk = client(gateway)
    messages: list[dict[str, object]] = [{"role": "user", "content": "tollgate"}]
    stream = await sdk.chat.completions.create(
        model="flash",
        messages=messages,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict[str, object]] = {}
    finish = None
    async for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            call = calls.setdefault(delta_call.index, {"arguments": ""})
            call["id"] = delta_call.id or call.get("id")
            call["name"] = delta_call.function.name if delta_call.function else None
            call["arguments"] = str(call["arguments"]) + ((delta_call.function and delta_call.function.arguments) or "")
            if extra := (delta_call.model_extra or {}).get("extra_content"):
                call["extra_content"] = extra
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    call = calls[0]
    assert call["name"] == "search"
    assert json.loads(str(call["arguments"])) == {"query": "tollgate"}
    assert str(call["id"]).startswith("call_")
    assert call["extra_content"] == {"google": {"thought_signature": "sig-1"}}
    assert gemini.requests[-1].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    # The next turn: the SDK sends the call back (signature included) with its result; Gemini checks the signature.
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": "search", "arguments": call["arguments"]},
                    "extra_content": call["extra_content"],
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": '{"hits": 3}'})
    answer = await sdk.chat.completions.create(model="flash", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == 'Results: [{"hits":3}]'
    sent = gemini.requests[-1].body["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"] == "sig-1"
    assert sent[2] == {"role": "user", "parts": [{"functionResponse": {"name": "search", "response": {"hits": 3}}}]}


async def test_missing_signature_is_gemini_400(gateway: RunningGateway, gemini: FakeGemini) -> None:
    await client(gateway).chat.completions.create(
        model="flash", messages=[{"role": "user", "content": "x"}], tools=TOOLS
    )  # type: ignore[arg-type]
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "none"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        await client(gateway).chat.completions.create(model="flash", messages=messages)  # type: ignore[arg-type]
    assert info.value.code == "invalid_argument"


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (429, openai.RateLimitError, "resource_exhausted"),
        (503, openai.InternalServerError, "service_unavailable"),
        (404, openai.NotFoundError, "not_found"),
    ],
)
async def test_upstream_errors(
    gateway: RunningGateway, gemini: FakeGemini, status: int, error: type[openai.APIStatusError], code: str
) -> None:
    gemini.fail_next.append(status)
    with pytest.raises(error) as info:
        await client(gateway).chat.completions.create(model="flash", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.code == code
    if status == 429:
        assert info.value.response.headers.get("retry-after") == "7"


async def test_embeddings(gateway: RunningGateway, gemini: FakeGemini) -> None:
    result = await client(gateway).embeddings.create(model="embed", input=["a", "bc"], dimensions=3)
    assert [len(e.embedding) for e in result.data] == [3, 3]
    assert [e.index for e in result.data] == [0, 1]
    assert gemini.requests[-1].path == "/v1beta/models/text-embedding-004:batchEmbedContents"
