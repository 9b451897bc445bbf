"""The rules for what a Responses request may ask, checked on `ResponseParams` (the same rules for both doors).

Like `gateway.validation` for chat: the engine runs `validate_responses` first thing, and the first thing wrong is
an `InvalidRequestError` (HTTP 400, gRPC INVALID_ARGUMENT) whose `param` is the field's path (`input[2].call_id`).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.validation import (
    METADATA_KEY_MAX,
    METADATA_PAIRS,
    METADATA_VALUE_MAX,
    USER_MAX,
    bad,
    check_json,
    check_model,
    check_range,
)
from tollgate.gateway.v1 import responses_pb2 as rpb

ID_MAX = 256  # characters of a response id; ours are 53
DEFAULT_PAGE, MAX_PAGE = 20, 100  # input items a page lists, as OpenAI
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICE_MODES = ("none", "auto", "required")
_TEXT_FORMATS = ("text", "json_object", "json_schema")


def validate_responses(params: rpb.ResponseParams) -> None:
    """Raise `InvalidRequestError` for the first thing wrong with a Responses request."""
    check_model(params.model)
    if not params.HasField("input_text") and not params.input:
        raise bad("input", "required: a string or a non-empty list of items")
    for i, item in enumerate(params.input):
        check_item(item, f"input[{i}]")
    _check_tools(params.tools)
    _check_sampling(params)
    if params.HasField("previous_response_id"):
        check_response_id(params.previous_response_id, "previous_response_id")
    check_json(params.extra_json, "extra_json")


def check_response_id(response_id: str, param: str) -> None:
    """A response id: present and of a sane length (whether it exists is the store's answer: a 404)."""
    if not response_id:
        raise bad(param, "must not be empty")
    if len(response_id) > ID_MAX:
        raise bad(param, f"at most {ID_MAX} characters")


def check_page(request: rpb.ListResponseInputItemsRequest) -> None:
    """A page request of input items: a response id, a limit of 1 to 100 (0: the default), an order."""
    check_response_id(request.response_id, "response_id")
    if not 0 <= request.limit <= MAX_PAGE:
        raise bad("limit", f"must be between 1 and {MAX_PAGE}, got {request.limit}")
    if request.order not in ("", "asc", "desc"):
        raise bad("order", f"expected asc or desc, got {request.order!r}")
    if len(request.after) > ID_MAX:
        raise bad("after", f"at most {ID_MAX} characters")


def check_item(item: rpb.ResponseItem, param: str) -> None:
    """An input item: a message with a role and content, a function call with its call id and name, a call's
    output with its call id; other types are checked by whoever serves them."""
    if not item.type:
        raise bad(f"{param}.type", "required")
    if item.type == "message":
        if item.role not in MESSAGE_ROLES:
            raise bad(f"{param}.role", f"expected one of {', '.join(MESSAGE_ROLES)}, got {item.role!r}")
        if not item.HasField("content_text") and not item.content:
            raise bad(f"{param}.content", "required for a message")
        for j, part in enumerate(item.content):
            if not part.type:
                raise bad(f"{param}.content[{j}].type", "required")
            check_json(part.extra_json, f"{param}.content[{j}].extra_json")
    elif item.type in ("function_call", "function_call_output"):
        if not item.call_id:
            raise bad(f"{param}.call_id", f"required for a {item.type} item")
        if item.type == "function_call" and not item.name:
            raise bad(f"{param}.name", "required for a function_call item")
        if item.type == "function_call_output" and not item.HasField("output") and "output" not in item.extra_json:
            raise bad(f"{param}.output", "required for a function_call_output item")
    check_json(item.extra_json, f"{param}.extra_json")


def _check_tools(tools: Sequence[rpb.ResponseTool]) -> None:
    for i, tool in enumerate(tools):
        if not tool.type:
            raise bad(f"tools[{i}].type", "required")
        if tool.type == "function" and not tool.name:
            raise bad(f"tools[{i}].name", "required for a function tool")
        check_json(tool.parameters_json, f"tools[{i}].parameters")
        check_json(tool.extra_json, f"tools[{i}].extra_json")


def _check_sampling(params: rpb.ResponseParams) -> None:
    if params.HasField("temperature"):
        check_range(params.temperature, "temperature", 0.0, 2.0)
    if params.HasField("top_p"):
        check_range(params.top_p, "top_p", 0.0, 1.0)
    if params.HasField("max_output_tokens"):
        check_range(params.max_output_tokens, "max_output_tokens", 1, 2**63 - 1)
    if params.tool_choice.WhichOneof("choice") == "mode" and params.tool_choice.mode not in _TOOL_CHOICE_MODES:
        raise bad("tool_choice", f"expected one of {', '.join(_TOOL_CHOICE_MODES)}, got {params.tool_choice.mode!r}")
    fmt = params.text_format
    if fmt.type and fmt.type not in _TEXT_FORMATS:
        raise bad("text.format.type", f"expected text, json_object or json_schema, got {fmt.type!r}")
    if fmt.type == "json_schema" and not fmt.name:
        raise bad("text.format.name", "required for a json_schema format")
    check_json(fmt.schema_json, "text.format.schema")
    if params.HasField("user") and len(params.user) > USER_MAX:
        raise bad("user", f"at most {USER_MAX} characters")
    for count, (key, value) in enumerate(params.metadata.items(), 1):
        if count > METADATA_PAIRS or len(key) > METADATA_KEY_MAX or len(value) > METADATA_VALUE_MAX:
            limits = f"{METADATA_PAIRS} pairs, keys of {METADATA_KEY_MAX} and values of {METADATA_VALUE_MAX} characters"
            raise bad("metadata", f"at most {limits}")
