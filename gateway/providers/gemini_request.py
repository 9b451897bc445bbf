"""`tollgate.gateway.v1` requests → Google Gemini API request JSON (generateContent, batchEmbedContents).

Shapes from the Gemini API reference: https://ai.google.dev/api/generate-content (GenerateContentRequest, Content,
Part, GenerationConfig, ThinkingConfig), https://ai.google.dev/api/caching#Tool (FunctionDeclaration with
`parametersJsonSchema`, ToolConfig / FunctionCallingConfig) and https://ai.google.dev/api/embeddings.

What the client did wrong for this provider (a tool result naming no earlier call, tool arguments that are not a JSON
object, a content part Gemini cannot take) is an `InvalidRequestError` naming the field, raised before any I/O.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.codec.json_fields import bad
from tollgate.gateway.v1 import gateway_pb2 as pb

# Where the thought signature of a function call rides in OpenAI JSON: the shape Google's own OpenAI-compatible
# endpoint uses (https://ai.google.dev/gemini-api/docs/thought-signatures), so clients already round-trip it.
EXTRA_CONTENT = "extra_content"
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# reasoning_effort → thinking budget in tokens, as Google's OpenAI-compatible endpoint maps it.
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_SYSTEM_ROLES = (pb.ROLE_SYSTEM, pb.ROLE_DEVELOPER)
_GENERATION_NAMES = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def encode_generate_request(params: pb.ChatCompletionParams) -> dict[str, Any]:
    """The GenerateContentRequest body for `params` (the model is in the URL)."""
    system, contents = _contents(params.messages)
    if not contents:
        # Gemini requires `contents`; the system instruction alone is no conversation.
        raise bad("messages", "a Gemini backend needs a user, assistant or tool message, not only system messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if params.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t, i) for i, t in enumerate(params.tools)]}]
    if (tool_config := _tool_config(params.tool_choice)) is not None:
        body["toolConfig"] = tool_config
    generation = _generation_config(params)
    if params.extra_json:
        _merge_extra(body, generation, orjson.loads(params.extra_json))
    if generation:
        body["generationConfig"] = generation
    return body


def _merge_extra(body: dict[str, Any], generation: dict[str, Any], extra: dict[str, Any]) -> None:
    """Gemini's own fields pass through: `generationConfig` merges (the client's wins), the rest go top level
    (safetySettings, cachedContent, labels…); what Gemini does not know, it refuses with a 400."""
    for key in ("generationConfig", "generation_config"):
        config = extra.pop(key, None)
        if config is not None and not isinstance(config, dict):
            raise bad(key, "expected an object (Gemini's GenerationConfig)")
        generation.update(config or {})
    if "top_k" in extra:
        generation["topK"] = extra.pop("top_k")
    if clash := sorted(set(extra) & set(body)):
        # Replacing what was translated from the request (contents, systemInstruction...) would send another one.
        raise bad(clash[0], "set from the request's messages and tools for a Gemini backend; send those instead")
    body.update(extra)


def _contents(messages: Iterable[pb.ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents); consecutive tool results become one user turn, as Gemini expects."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the functionResponse parts
    tool_turn: list[dict[str, Any]] | None = None  # the parts of the user turn that answers the last tool calls
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if msg.role == pb.ROLE_TOOL:
            if tool_turn is None:
                tool_turn = []
                contents.append({"role": "user", "parts": tool_turn})
            tool_turn.append(_function_response(msg, names, param))
            continue
        tool_turn = None
        if msg.role in _SYSTEM_ROLES:
            system.extend(_parts(msg, param))
        elif msg.role == pb.ROLE_ASSISTANT:
            parts = _parts(msg, param) if (msg.content or msg.content_parts) else []
            for j, call in enumerate(msg.tool_calls):
                names[call.id] = call.function.name
                parts.append(_function_call(call, f"{param}.tool_calls[{j}]"))
            contents.append({"role": "model", "parts": parts or [{"text": ""}]})
        else:
            contents.append({"role": "user", "parts": _parts(msg, param)})
    return system, contents


def _parts(msg: pb.ChatMessage, param: str) -> list[dict[str, Any]]:
    if not msg.content_parts:
        return [{"text": msg.content}]
    return [_part(p, f"{param}.content[{i}]") for i, p in enumerate(msg.content_parts)]


def _part(part: pb.ContentPart, param: str) -> dict[str, Any]:
    which = part.WhichOneof("part")
    if which == "text":
        return {"text": part.text}
    if which == "image_url":
        return _media(part.image_url.url, f"{param}.image_url.url")
    if which == "input_audio":
        return {"inlineData": {"mimeType": f"audio/{part.input_audio.format}", "data": part.input_audio.data}}
    if which == "file":
        if part.file.file_data:
            return _media(part.file.file_data, f"{param}.file.file_data")
        return {"fileData": {"fileUri": part.file.file_id}}
    raise bad(param, "this content part cannot be sent to a Gemini backend")


def _media(url: str, param: str) -> dict[str, Any]:
    """A data: URL becomes inline data; any other URL a file reference (Gemini fetches it)."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not mime:
            raise bad(param, "a data URL must look like data:<mime type>;base64,<data>")
        try:
            base64.b64decode(data, validate=True)
        except binascii.Error:
            raise bad(param, "the data URL is not valid base64") from None
        return {"inlineData": {"mimeType": mime, "data": data}}
    file_data = {"fileUri": url}
    guessed = mimetypes.guess_type(url)[0]
    if guessed is not None:
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _function_call(call: pb.ToolCall, param: str) -> dict[str, Any]:
    try:
        args = orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise bad(f"{param}.function.arguments", "must be a JSON object for a Gemini backend")
    part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
    if signature := thought_signature(call.extra_json):
        part["thoughtSignature"] = signature
    return part


def thought_signature(extra_json: str) -> str | None:
    """The Gemini thought signature a tool call carried back, if any."""
    if not extra_json:
        return None
    extra = orjson.loads(extra_json).get(EXTRA_CONTENT)
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def _function_response(msg: pb.ChatMessage, names: dict[str, str], param: str) -> dict[str, Any]:
    name = names.get(msg.tool_call_id) or (msg.name if msg.HasField("name") else "")
    if not name:
        raise bad(f"{param}.tool_call_id", f"no earlier assistant tool call has the id {msg.tool_call_id!r}")
    text = msg.content if not msg.content_parts else "".join(p.text for p in msg.content_parts)
    try:
        result = orjson.loads(text)
    except orjson.JSONDecodeError:
        result = None
    # Gemini takes a JSON object; anything else is wrapped, under the key its function-calling guide uses.
    response = result if isinstance(result, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: pb.Tool, index: int) -> dict[str, Any]:
    if tool.type != "function":
        raise bad(f"tools[{index}].type", f"a Gemini backend takes only function tools, got {tool.type!r}")
    fn = tool.function
    out: dict[str, Any] = {"name": fn.name}
    if fn.HasField("description"):
        out["description"] = fn.description
    if fn.parameters_json:
        # Full JSON Schema, so nothing is lost converting to the OpenAPI subset that `parameters` takes.
        out["parametersJsonSchema"] = orjson.loads(fn.parameters_json)
    return out


def _tool_config(choice: pb.ToolChoice) -> dict[str, Any] | None:
    which = choice.WhichOneof("choice")
    if which == "mode":
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice.mode]}}
    if which == "function_name":
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}}
    return None


def _generation_config(params: pb.ChatCompletionParams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty"):
        if params.HasField(key):
            out[_GENERATION_NAMES[key]] = getattr(params, key)
    if params.HasField("max_completion_tokens") or params.HasField("max_tokens"):
        out["maxOutputTokens"] = params.max_completion_tokens or params.max_tokens
    if params.stop:
        out["stopSequences"] = list(params.stop)
    fmt = params.response_format
    if fmt.type in ("json_object", "json_schema"):
        out["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema.schema_json:
            out["responseJsonSchema"] = orjson.loads(fmt.json_schema.schema_json)
    if params.HasField("reasoning_effort"):
        budget = THINKING_BUDGETS.get(params.reasoning_effort)
        if budget is None:
            raise bad("reasoning_effort", f"expected one of {', '.join(THINKING_BUDGETS)} for a Gemini backend")
        out["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return out


def encode_embed_request(request: pb.CreateEmbeddingsRequest, model: str) -> dict[str, Any]:
    """The batchEmbedContents body: one request per input, in order."""
    if request.input_tokens:
        raise bad("input", "a Gemini backend embeds text only, not token ids")
    extra = orjson.loads(request.extra_json) if request.extra_json else {}
    requests = []
    for text in request.input:
        one: dict[str, Any] = {"model": model_path(model), "content": {"parts": [{"text": text}]}}
        if request.HasField("dimensions"):
            one["outputDimensionality"] = request.dimensions
        one.update(extra)  # taskType, title: Gemini's own fields
        requests.append(one)
    return {"requests": requests}


def model_path(model: str) -> str:
    """`models/<name>` as Gemini names a model, unless the name already has its collection (tunedModels/…)."""
    return model if "/" in model else f"models/{model}"
