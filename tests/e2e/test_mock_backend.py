"""The built-in mock backend answers in the shape a request asks for, through the official SDKs, in both modes:
tool calls, JSON for `response_format` (a schema's minimal instance), token counts; and `models.retrieve`."""

from __future__ import annotations

import json

import anthropic
import openai
import pydantic
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.conftest import RunningGateway

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
HELLO = [{"role": "user", "content": "Hello"}]


def client(gateway: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=10)


async def test_required_tool_choice_gets_a_tool_call(gateway: RunningGateway) -> None:
    answer = await client(gateway).chat.completions.create(
        model="demo",
        messages=HELLO,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice="required",
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "demo", "unit": "celsius", "days": 1}  # type: ignore[union-attr]


async def test_named_tool_choice_streams_that_tool(gateway: RunningGateway) -> None:
    stream = await client(gateway).chat.completions.create(
        model="demo",
        messages=HELLO,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        stream=True,
    )
    names, arguments, finish = [], "", None
    async for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            if call.function and call.function.name:
                names.append(call.function.name)
            arguments += (call.function.arguments or "") if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_time"]
    assert json.loads(arguments) == {}
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("prompt", "called"), [("What is the weather in Paris? Use get_weather.", "get_weather"), ("Hello", None)]
)
async def test_auto_calls_a_tool_the_user_names(gateway: RunningGateway, prompt: str, called: str | None) -> None:
    answer = await client(gateway).chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": prompt}],
        tools=[CLOCK, WEATHER],  # type: ignore[list-item]
    )
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ([called] if called else [])  # type: ignore[union-attr]
    assert answer.choices[0].finish_reason == ("tool_calls" if called else "stop")


async def test_after_a_tool_result_it_answers_in_text(gateway: RunningGateway) -> None:
    messages = [
        {"role": "user", "content": "Use get_weather for Paris"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    answer = await client(gateway).chat.completions.create(
        model="demo",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content


async def test_json_object(gateway: RunningGateway) -> None:
    answer = await client(gateway).chat.completions.create(
        model="demo",
        messages=HELLO,
        response_format={"type": "json_object"},
        max_tokens=2,  # type: ignore[arg-type]
    )
    assert json.loads(answer.choices[0].message.content or "")["answer"]


class Address(pydantic.BaseModel):
    street: str
    zip_code: str


class Person(pydantic.BaseModel):
    name: str
    age: int
    role: str = pydantic.Field(json_schema_extra={"enum": ["admin", "user"]})
    tags: list[str]
    home: Address  # a nested model: pydantic writes a $ref into $defs
    nickname: str | None


async def test_structured_output_parses_into_the_schema(gateway: RunningGateway) -> None:
    parsed = await client(gateway).chat.completions.parse(model="demo", messages=HELLO, response_format=Person)  # type: ignore[arg-type]
    person = parsed.choices[0].message.parsed
    assert person == Person(
        name="demo", age=0, role="admin", tags=["demo"], home=Address(street="demo", zip_code="demo"), nickname="demo"
    )


async def test_count_tokens_with_the_anthropic_sdk(gateway: RunningGateway) -> None:
    claude = anthropic.AsyncAnthropic(base_url=gateway.http_url, api_key="unused", max_retries=0)
    short = await claude.messages.count_tokens(model="demo", messages=[{"role": "user", "content": "Hi"}])
    long = await claude.messages.count_tokens(model="demo", messages=[{"role": "user", "content": "Hi " * 400}])
    assert 1 <= short.input_tokens < long.input_tokens
    answer = await claude.messages.create(
        model="demo", max_tokens=50, messages=[{"role": "user", "content": "Hi " * 400}]
    )
    assert answer.usage.input_tokens == long.input_tokens  # the count is the usage the answer reports


async def test_retrieve_a_model(gateway: RunningGateway, upstream: FakeOpenAI) -> None:
    model = await client(gateway).models.retrieve("demo")
    assert (model.id, model.object) == ("demo", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await client(gateway).models.retrieve("no-such-model")
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "message": "The model 'no-such-model' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
