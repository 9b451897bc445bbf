"""The Responses API over the chat path: a Responses request as a chat request, and a chat answer (whole or
streamed) as a response or as the Responses stream's events. Proto to proto; no JSON.

What chat cannot carry is refused with a 400 naming the field (built-in tools, item types chat has no place for),
except in a stored conversation's history, where an item chat cannot carry (a reasoning item, a built-in tool's
call from an OpenAI backend) is left out: the rest of the conversation still makes sense. docs/api.md lists what is
lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import orjson

from gateway.errors import InvalidRequestError
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import responses_pb2 as rpb

ROLES = {
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "system": pb.ROLE_SYSTEM,
    "developer": pb.ROLE_DEVELOPER,
}
_TEXT_PARTS = ("input_text", "output_text")
_INCOMPLETE = {pb.FINISH_REASON_LENGTH: "max_output_tokens", pb.FINISH_REASON_CONTENT_FILTER: "content_filter"}


def item_id(prefix: str) -> str:
    """A fresh id for an output item the gateway makes: `msg_…`, `fc_…`, `rs_…`."""
    return f"{prefix}_{os.urandom(12).hex()}"


def unsupported(param: str, what: str) -> InvalidRequestError:
    """A request a chat backend cannot serve as asked: a 400 naming the field."""
    return InvalidRequestError(
        f"{param}: {what} needs a backend that serves the Responses API itself (OpenAI, Azure); "
        "this model is served through chat completions",
        code="unsupported_parameter",
        param=param,
    )


# ---------------------------------------------------------------------------------------------------- request


def chat_params(
    params: rpb.ResponseParams, history: Sequence[rpb.ResponseItem], *, stream: bool, strict: bool = True
) -> pb.ChatCompletionParams:
    """The chat request for a Responses request whose conversation so far is `history` (a previous response's input
    and output). `strict`: refuse what chat cannot carry (False: leave it out, for reading the prompt only)."""
    out = pb.ChatCompletionParams(model=params.model)
    if params.HasField("instructions"):
        out.messages.add(role=pb.ROLE_SYSTEM, content=params.instructions)
    for item in history:
        _add_item(out, item, "", strict=False)
    if params.HasField("input_text"):
        out.messages.add(role=pb.ROLE_USER, content=params.input_text)
    for i, item in enumerate(params.input):
        _add_item(out, item, f"input[{i}]", strict=strict)
    _add_tools(out, params, strict=strict)
    _add_sampling(out, params)
    if stream:
        out.stream_options.include_usage = True  # the response.completed event carries the usage
    return out


def _add_item(out: pb.ChatCompletionParams, item: rpb.ResponseItem, param: str, *, strict: bool) -> None:
    if item.type == "message":
        _add_message(out, item, param, strict=strict)
    elif item.type == "function_call":
        last = out.messages[-1] if out.messages else None
        # Calls after an assistant message (or after each other) are that message's tool calls.
        message = (
            last if last is not None and last.role == pb.ROLE_ASSISTANT else out.messages.add(role=pb.ROLE_ASSISTANT)
        )
        # The call's own fields (Gemini's thought signature) go back as the backend sent them.
        call = message.tool_calls.add(id=item.call_id, type="function", extra_json=item.extra_json)
        call.function.name, call.function.arguments = item.name, item.arguments
    elif item.type == "function_call_output":
        out.messages.add(role=pb.ROLE_TOOL, tool_call_id=item.call_id, content=_output_text(item))
    elif item.type != "reasoning" and strict:  # reasoning items are the backend's own: chat has no place for them
        raise unsupported(f"{param}.type", f"an item of type {item.type!r}")


def _add_message(out: pb.ChatCompletionParams, item: rpb.ResponseItem, param: str, *, strict: bool) -> None:
    message = out.messages.add(role=ROLES.get(item.role, pb.ROLE_USER))
    if item.HasField("content_text"):
        message.content = item.content_text
        return
    texts = [part.text for part in item.content if part.type in _TEXT_PARTS]
    if len(texts) == len(item.content) and (len(texts) == 1 or message.role != pb.ROLE_USER):
        message.content = "".join(texts)  # an assistant's or system's parts: one string, as every backend takes
        return
    for j, part in enumerate(item.content):
        if part.type in _TEXT_PARTS:
            message.content_parts.add(text=part.text)
        elif part.type == "refusal":
            message.refusal = part.text
        elif part.type == "input_image" and (url := _extra(part.extra_json).get("image_url")):
            detail = _extra(part.extra_json).get("detail")
            message.content_parts.add(image_url=pb.ImageUrl(url=str(url), detail=str(detail or "")))
        elif part.type == "input_file":
            fields = _extra(part.extra_json)
            file = pb.FilePart(
                file_id=str(fields.get("file_id") or ""),
                file_data=str(fields.get("file_data") or ""),
                filename=str(fields.get("filename") or ""),
            )
            message.content_parts.add(file=file)
        elif strict:
            raise unsupported(f"{param}.content[{j}].type", f"a content part of type {part.type!r}")
    if not message.content_parts and not message.HasField("refusal"):
        message.content = ""


def _output_text(item: rpb.ResponseItem) -> str:
    """A function call's output as text: the string, or the text of its parts."""
    if item.HasField("output"):
        return item.output
    parts = _extra(item.extra_json).get("output")
    if isinstance(parts, list):
        return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    return ""


def _extra(extra_json: str) -> dict[str, object]:
    value = orjson.loads(extra_json) if extra_json else {}
    return value if isinstance(value, dict) else {}


def _add_tools(out: pb.ChatCompletionParams, params: rpb.ResponseParams, *, strict: bool) -> None:
    for i, tool in enumerate(params.tools):
        if tool.type != "function":
            if strict:
                raise unsupported(f"tools[{i}].type", f"the built-in tool {tool.type!r}")
            continue
        function = pb.FunctionDefinition(name=tool.name, parameters_json=tool.parameters_json)
        if tool.HasField("description"):
            function.description = tool.description
        if tool.HasField("strict"):
            function.strict = tool.strict
        out.tools.add(type="function", function=function)
    choice = params.tool_choice.WhichOneof("choice")
    if choice == "mode":
        out.tool_choice.mode = params.tool_choice.mode
    elif choice == "function_name":
        out.tool_choice.function_name = params.tool_choice.function_name
    elif strict and "tool_choice" in _extra(params.extra_json):
        raise unsupported("tool_choice", "a built-in tool choice")
    if params.HasField("parallel_tool_calls") and out.tools:
        out.parallel_tool_calls = params.parallel_tool_calls


def _add_sampling(out: pb.ChatCompletionParams, params: rpb.ResponseParams) -> None:
    if params.HasField("temperature"):
        out.temperature = params.temperature
    if params.HasField("top_p"):
        out.top_p = params.top_p
    if params.HasField("max_output_tokens"):
        out.max_completion_tokens = params.max_output_tokens
    if params.HasField("user"):
        out.user = params.user
    if params.HasField("reasoning_effort"):
        out.reasoning_effort = params.reasoning_effort
    fmt = params.text_format
    if fmt.type:
        out.response_format.type = fmt.type
    if fmt.type == "json_schema":
        schema = out.response_format.json_schema
        schema.name, schema.schema_json = fmt.name, fmt.schema_json
        if fmt.HasField("description"):
            schema.description = fmt.description
        if fmt.HasField("strict"):
            schema.strict = fmt.strict


# ---------------------------------------------------------------------------------------------------- answer


def response_usage(usage: pb.Usage) -> rpb.ResponseUsage:
    """Chat usage as the Responses API counts it."""
    return rpb.ResponseUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def chat_usage(usage: rpb.ResponseUsage) -> pb.Usage:
    """A response's usage as the engine meters it."""
    return pb.Usage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def finish(response: rpb.Response, finish_reason: pb.FinishReason.ValueType) -> None:
    """Set a finished response's status from its choice's finish reason."""
    reason = _INCOMPLETE.get(finish_reason)
    response.status = "incomplete" if reason else "completed"
    response.incomplete_reason = reason or ""


def fill_from_completion(response: rpb.Response, completion: pb.CreateChatCompletionResponse) -> None:
    """`response` (its id and request set) completed from a whole chat completion's first choice."""
    response.model = completion.model
    choice = completion.choices[0] if completion.choices else pb.Choice()
    message = choice.message
    status = "incomplete" if choice.finish_reason in _INCOMPLETE else "completed"
    if message.reasoning_content:
        summary = rpb.ResponseContent(type="summary_text", text=message.reasoning_content)
        response.output.add(type="reasoning", id=item_id("rs"), summary=[summary])
    if message.content or message.HasField("refusal") or not message.tool_calls:
        parts = [rpb.ResponseContent(type="output_text", text=message.content)]
        if message.HasField("refusal"):
            parts = [rpb.ResponseContent(type="refusal", text=message.refusal)]
        response.output.add(type="message", id=item_id("msg"), status=status, role="assistant", content=parts)
    for call in message.tool_calls:
        response.output.add(
            type="function_call",
            id=item_id("fc"),
            status="completed",
            call_id=call.id,
            name=call.function.name,
            arguments=call.function.arguments,
            extra_json=call.extra_json,  # a provider's own fields, for the next turn (Gemini's thought signature)
        )
    finish(response, choice.finish_reason)
    if completion.HasField("usage"):
        response.usage.CopyFrom(response_usage(completion.usage))
