"""The Responses API over chat: a Responses request as a chat request, and chat chunks as Responses events in
OpenAI's order (reasoning summary, then text, then function calls, then the response with its usage)."""

from __future__ import annotations

import pytest

from gateway.codec.responses_request import decode_response_params
from gateway.engine.responses_chat import chat_params, fill_from_completion
from gateway.engine.responses_events import ChunkEvents
from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb


def params(**body: object) -> rpb.ResponseParams:
    decoded, _ = decode_response_params({"model": "m", **body})
    return decoded


def test_a_conversation_becomes_chat_messages() -> None:
    history = [
        rpb.ResponseItem(type="message", role="user", content_text="weather?"),
        rpb.ResponseItem(type="reasoning", id="rs_1"),  # the backend's own: left out
        rpb.ResponseItem(type="function_call", call_id="c1", name="weather", arguments="{}"),
        rpb.ResponseItem(type="web_search_call", id="ws_1"),  # an OpenAI backend's built-in call: left out
    ]
    request = params(
        instructions="Be brief.",
        input=[
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "sunny"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "and"},
                    {"type": "input_image", "image_url": "https://x/a.png"},
                ],
            },
        ],
        tools=[{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": True}],
        tool_choice="required",
        max_output_tokens=100,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
    )
    chat = chat_params(request, history, stream=True)
    roles = [m.role for m in chat.messages]
    assert roles == [pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_USER]
    assert chat.messages[2].tool_calls[0].id == "c1" and not chat.messages[2].HasField("content")
    assert chat.messages[3].content == "sunny" and chat.messages[3].tool_call_id == "c1"
    assert chat.messages[4].content_parts[1].image_url.url == "https://x/a.png"
    assert chat.tools[0].function.name == "weather" and chat.tools[0].function.strict
    assert chat.tool_choice.mode == "required" and chat.max_completion_tokens == 100
    assert chat.reasoning_effort == "low" and chat.response_format.json_schema.name == "s"
    assert chat.stream_options.include_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice"),
    ],
)
def test_what_chat_cannot_carry_is_a_400(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        chat_params(params(**body), [], stream=False)
    assert caught.value.param == param and caught.value.code == "unsupported_parameter"
    chat_params(params(**body), [], stream=False, strict=False)  # reading the prompt only: left out


def chunk(**delta: object) -> pb.StreamChatCompletionResponse:
    finish = delta.pop("finish", pb.FINISH_REASON_UNSPECIFIED)
    return pb.StreamChatCompletionResponse(
        model="m-1",
        choices=[pb.ChunkChoice(index=0, delta=pb.Delta(**delta), finish_reason=finish)],  # type: ignore[arg-type]
    )


def test_chunks_become_events_in_openais_order() -> None:
    events = ChunkEvents(rpb.Response(id="resp_1"))
    out = events.opening()
    call = pb.ToolCallDelta(index=0, id="c1", function=pb.FunctionCallDelta(name="f", arguments='{"a"'))
    for piece in (
        chunk(reasoning_content="Hm"),
        chunk(reasoning_content="m."),
        chunk(content="Hi"),
        chunk(tool_calls=[call]),
        chunk(tool_calls=[pb.ToolCallDelta(index=0, function=pb.FunctionCallDelta(arguments=":1}"))]),
        chunk(finish=pb.FINISH_REASON_TOOL_CALLS),
        pb.StreamChatCompletionResponse(usage=pb.Usage(prompt_tokens=5, completion_tokens=7, reasoning_tokens=2)),
    ):
        out += events.feed(piece)
    out += events.closing()
    assert [e.type for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in out] == list(range(len(out)))
    assert [e.output_index for e in out if e.type == "response.output_item.added"] == [0, 1, 2]
    final = out[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].summary[0].text == "Hmm." and final.output[1].content[0].text == "Hi"
    assert (final.output[2].call_id, final.output[2].arguments) == ("c1", '{"a":1}')
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (5, 7, 12)
    assert final.usage.reasoning_tokens == 2 and final.status == "completed" and final.model == "m-1"


def test_a_length_cut_is_incomplete() -> None:
    events = ChunkEvents(rpb.Response(id="resp_1"))
    out = [*events.opening(), *events.feed(chunk(content="a")), *events.feed(chunk(finish=pb.FINISH_REASON_LENGTH))]
    out += events.closing()
    assert out[-1].type == "response.incomplete"
    assert out[-1].response.incomplete_reason == "max_output_tokens"
    assert out[-1].response.output[0].status == "incomplete"


def test_a_whole_completion_becomes_a_response() -> None:
    message = pb.ChatMessage(role=pb.ROLE_ASSISTANT, content="", reasoning_content="because")
    message.tool_calls.add(id="c1", type="function", function=pb.FunctionCall(name="f", arguments="{}"))
    completion = pb.CreateChatCompletionResponse(
        model="m-1",
        choices=[pb.Choice(message=message, finish_reason=pb.FINISH_REASON_TOOL_CALLS)],
        usage=pb.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7, cached_tokens=1),
    )
    response = rpb.Response(id="resp_1")
    fill_from_completion(response, completion)
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    assert response.status == "completed" and response.usage.cached_tokens == 1 and response.model == "m-1"
