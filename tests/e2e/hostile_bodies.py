"""Hostile request bodies for both front doors: a valid base body per API, every field of it replaced by values of
every JSON type (and removed), raw bytes no JSON parser should accept quietly, and valid-but-odd requests that only
a provider's translation can refuse. Deterministic, so a failure reproduces by its label.

The base bodies follow the published request schemas: OpenAI's Chat Completions
(https://platform.openai.com/docs/api-reference/chat/create) and Anthropic's Messages API
(https://docs.anthropic.com/en/api/messages).
"""

from __future__ import annotations

import copy
import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
# One value of each JSON type and the edges of each: what a client may put in any field.
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1.5, -1e308, 2**63, -(2**63) - 1, 2**64 - 1, "", "\u0000", "x" * 2000,
    [], [None], [[[]]], {}, {"type": None}, {"type": "text"}, {"a": {"b": {"c": []}}},
]  # fmt: skip


def dumps(value: Any) -> bytes:
    """Compact JSON; the stdlib's, which writes integers of any size (orjson stops at 64 bits)."""
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Body:
    """One request to send: where, what, and a label that names it in a failure report."""

    label: str
    path: str  # /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/responses
    raw: bytes
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


def openai_base(model: str) -> dict[str, Any]:
    """A valid chat completion body using most fields."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0.5,
        "max_tokens": 50,
        "stop": ["zz"],
        "metadata": {"k": "v"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        "user": "u",
        "seed": 7,
        "top_p": 0.9,
        "n": 1,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "logit_bias": {"50256": -100},
        "logprobs": False,
        "parallel_tool_calls": True,
        "reasoning_effort": "low",
        "store": False,
        "modalities": ["text"],
        "stream": False,
    }


def openai_stream_base(model: str) -> dict[str, Any]:
    """The same body, streamed with usage: its fields mutated reach the streaming paths."""
    return {**openai_base(model), "stream": True, "stream_options": {"include_usage": True}}


def responses_base(model: str) -> dict[str, Any]:
    """A valid Responses API body using most fields (https://platform.openai.com/docs/api-reference/responses)."""
    return {
        "model": model,
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "hi"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
                ],
            },
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_output_tokens": 50,
        "parallel_tool_calls": True,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "metadata": {"k": "v"},
        "user": "u",
        "store": False,
        "stream": False,
    }


def responses_stream_base(model: str) -> dict[str, Any]:
    """The Responses body, streamed."""
    return {**responses_base(model), "stream": True}


def responses_odd(model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Valid Responses requests that a translating backend must refuse cleanly or carry across."""
    plain = {"model": model, "max_output_tokens": 20}
    yield "string input", {**plain, "input": "hi"}
    yield "item without type", {**plain, "input": [{"role": "user", "content": "hi"}]}
    yield "built-in tool", {**plain, "input": "hi", "tools": [{"type": "web_search"}]}
    yield "built-in tool choice", {**plain, "input": "hi", "tool_choice": {"type": "web_search_preview"}}
    yield "reasoning item", {**plain, "input": [{"type": "reasoning", "id": "rs_1", "summary": []}, "hi"]}
    yield "unknown item", {**plain, "input": [{"type": "hologram", "x": 1}]}
    yield "unknown part", {**plain, "input": [{"role": "user", "content": [{"type": "input_hologram"}]}]}
    yield "image file id", {**plain, "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}
    yield "file", {**plain, "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}
    yield (
        "output as parts",
        {
            **plain,
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"},
                {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "1"}]},
            ],
        },
    )
    yield "output without a call", {**plain, "input": [{"type": "function_call_output", "call_id": "x", "output": "1"}]}
    yield "unknown previous", {**plain, "input": "hi", "previous_response_id": "resp_unknown"}
    yield "previous of wrong type", {**plain, "input": "hi", "previous_response_id": 7}
    yield "text verbosity", {**plain, "input": "hi", "text": {"verbosity": "low", "format": {"type": "text"}}}
    yield "reasoning newer shape", {**plain, "input": "hi", "reasoning": {"effort": "high", "budget": 5}}
    yield "include", {**plain, "input": "hi", "include": ["reasoning.encrypted_content"]}
    yield (
        "assistant parts",
        {
            **plain,
            "input": [
                {
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"}],
                },
                {"role": "user", "content": "hi"},
            ],
        },
    )


def anthropic_stream_base(model: str) -> dict[str, Any]:
    """The Messages API body, streamed."""
    return {**anthropic_base(model), "stream": True}


def anthropic_base(model: str) -> dict[str, Any]:
    """A valid Messages API body using most fields."""
    return {
        "model": model,
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]},
        ],
        "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u"},
        "temperature": 0.5,
        "top_k": 5,
        "stop_sequences": ["zz"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into `value` (dict keys and list indexes), parents before children."""
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(base: dict[str, Any], path: tuple[Any, ...], value: Any, *, remove: bool = False) -> dict[str, Any]:
    body = copy.deepcopy(base)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


def _label(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def field_mutations(base: dict[str, Any], endpoint: str) -> Iterator[Body]:
    """The base body with each field, at every depth, set to each hostile value, and removed."""
    for path in _paths(base):
        where = _label(path)
        yield Body(f"{endpoint} {where} removed", endpoint, dumps(_replaced(base, path, None, remove=True)))
        for i, value in enumerate(HOSTILE):
            body = _replaced(base, path, value)
            yield Body(f"{endpoint} {where}=HOSTILE[{i}]", endpoint, dumps(body))


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw_bodies(base: dict[str, Any], endpoint: str) -> Iterator[Body]:
    """Bytes that are not the JSON they claim to be, or JSON at the edges of what parsers take."""
    valid = dumps(base).decode()
    inner = valid[1:-1]
    raw = {
        "empty": b"",
        "whitespace": b"  \n ",
        "null": b"null",
        "array": b"[]",
        "number": b"42",
        "string": b'"hello"',
        "truncated": valid[: len(valid) // 2].encode(),
        "trailing garbage": (valid + "}").encode(),
        "two objects": (valid + valid).encode(),
        "NaN": ('{"temperature": NaN, ' + inner + "}").encode(),
        "Infinity": ('{"max_tokens": Infinity, ' + inner + "}").encode(),
        "-Infinity": ('{"temperature": -Infinity, ' + inner + "}").encode(),
        "1e999": ('{"temperature": 1e999, ' + inner + "}").encode(),
        "-1e999 max_tokens": ("{" + inner + ', "max_tokens": -1e999}').encode(),
        "huge int": ("{" + inner + ', "max_tokens": 1' + "0" * 40 + "}").encode(),
        "huge negative int": ("{" + inner + ', "seed": -1' + "0" * 40 + "}").encode(),
        "duplicate keys": ('{"model": 5, ' + inner + ', "model": "x"}').encode(),
        "duplicate messages": ("{" + inner + ', "messages": 3}').encode(),
        "non-UTF-8": b'{"model": "\xff\xfe", ' + inner.encode() + b"}",
        "latin-1 in string": ("{" + inner.replace('"hi"', '"h\xe9"') + "}").encode("latin-1", "replace"),
        "BOM": b"\xef\xbb\xbf" + valid.encode(),
        "UTF-16": valid.encode("utf-16"),
        "lone surrogate": ("{" + inner.replace('"hi"', '"\\ud800"') + "}").encode(),
        "NUL in string": ("{" + inner.replace('"hi"', '"a\\u0000b"') + "}").encode(),
        "control char": ("{" + inner.replace('"hi"', '"a\x01b"') + "}").encode(),
        "deep 100000": ("{" + inner + ', "deep": ' + _deep(100_000) + "}").encode(),
        "deep 1000 extra": ("{" + inner + ', "deep": ' + _deep(1000) + "}").encode(),
        "deep 300 extra": ("{" + inner + ', "deep": ' + _deep(300) + "}").encode(),
        "deep 300 metadata": ("{" + inner + ', "metadata": {"k": ' + _deep(300) + "}}").encode(),
        "deep 300 in content": ("{" + inner.replace('"hi"', '"hi", "deep": ' + _deep(300)) + "}").encode(),
        "comment": ("{/* c */" + inner + "}").encode(),
        "single quotes": valid.replace('"', "'").encode(),
        "oversized": ("{" + inner + ', "pad": "' + "x" * 400_000 + '"}').encode(),
    }
    for name, data in raw.items():
        yield Body(f"{endpoint} raw {name}", endpoint, data)


def header_bodies(base: dict[str, Any], endpoint: str) -> Iterator[Body]:
    """A valid body under headers that lie about it: compression it does not have, other content types."""
    valid = dumps(base)
    cases = {
        "gzip that is not": (valid, "gzip", "application/json"),
        "deflate that is not": (valid, "deflate", "application/json"),
        "br that is not": (valid, "br", "application/json"),
        "unknown encoding": (valid, "zstd-x", "application/json"),
        "truncated gzip": (gzip.compress(valid)[:20], "gzip", "application/json"),
        "gzip deep nesting": (gzip.compress(b"[" * 200_000), "gzip", "application/json"),
        "gzip bomb": (gzip.compress(b" " * 8_000_000 + valid), "gzip", "application/json"),
        "gzip, br": (gzip.compress(valid), "gzip, br", "application/json"),
        "text/plain": (valid, "", "text/plain"),
        "form": (b"model=x&messages=y", "", "application/x-www-form-urlencoded"),
        "multipart": (b"--b\r\n\r\nx\r\n--b--", "", "multipart/form-data; boundary=b"),
    }
    for name, (data, encoding, content_type) in cases.items():
        headers = [("content-type", content_type)] + ([("content-encoding", encoding)] if encoding else [])
        yield Body(f"{endpoint} header {name}", endpoint, data, tuple(headers))


def random_garbage(base: dict[str, Any], endpoint: str, count: int, seed: int) -> Iterator[Body]:
    """The base body with a random field replaced by a random JSON tree (seeded: a failure's label reproduces it)."""
    rng = random.Random(seed)
    paths = list(_paths(base))
    for n in range(count):
        path = rng.choice(paths)
        yield Body(
            f"{endpoint} garbage #{n} at {_label(path)} (seed {seed})",
            endpoint,
            dumps(_replaced(base, path, _tree(rng, 4))),
        )


_LEAVES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**70, 0.5, -0.0, 1e-300, 1e300, "", "text", "image",
    "tool_use", "tool_result", "user", "assistant", "\u2603", "a\nb", "{}",
]  # fmt: skip
_KEYS = ["type", "text", "role", "content", "name", "id", "input", "source", "url", "data", "function"]


def _tree(rng: random.Random, depth: int) -> Any:
    """A random JSON value: leaves from the edges of each type, objects keyed like the APIs' own fields."""
    kind = rng.randrange(3) if depth > 0 else 0
    if kind == 1:
        return {rng.choice(_KEYS): _tree(rng, depth - 1) for _ in range(rng.randrange(4))}
    if kind == 2:
        return [_tree(rng, depth - 1) for _ in range(rng.randrange(4))]
    return rng.choice(_LEAVES)


def _openai(model: str, **changes: Any) -> dict[str, Any]:
    return {**openai_base(model), **changes}


def _user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def openai_odd(model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Valid OpenAI requests that a translating provider must refuse cleanly or carry across."""
    plain = {"model": model, "max_tokens": 20}
    hi = {"role": "user", "content": "hi"}
    yield (
        "image http url",
        {**plain, "messages": [_user({"type": "image_url", "image_url": {"url": "https://x/a.png"}})]},
    )
    yield (
        "image bad base64",
        {
            **plain,
            "messages": [_user({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!not base64!!!"}})],
        },
    )
    yield (
        "image data url no base64",
        {**plain, "messages": [_user({"type": "image_url", "image_url": {"url": "data:,x"}})]},
    )
    yield (
        "image data url no mime",
        {**plain, "messages": [_user({"type": "image_url", "image_url": {"url": "data:;base64,QQ=="}})]},
    )
    yield "image empty url", {**plain, "messages": [_user({"type": "image_url", "image_url": {"url": ""}})]}
    yield (
        "audio part",
        {**plain, "messages": [_user({"type": "input_audio", "input_audio": {"data": "QQ==", "format": "wav"}})]},
    )
    yield "file id", {**plain, "messages": [_user({"type": "file", "file": {"file_id": "file-1"}})]}
    yield "file data not a data url", {**plain, "messages": [_user({"type": "file", "file": {"file_data": "hello"}})]}
    yield "unknown part type", {**plain, "messages": [_user({"type": "hologram", "hologram": {"x": 1}})]}
    yield "unknown part without payload", {**plain, "messages": [_user({"type": "mystery"})]}
    yield (
        "tool message without a call",
        {**plain, "messages": [hi, {"role": "tool", "tool_call_id": "nope", "content": "1"}]},
    )
    yield "tool message first", {**plain, "messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]}
    yield (
        "tool message parts",
        {
            **plain,
            "messages": [
                hi,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": '{"a":1}'}]},
            ],
        },
    )
    for name, arguments in (("not json", "{oops"), ("an array", "[1,2]"), ("a string", '"s"'), ("empty", "")):
        yield (
            f"tool call arguments {name}",
            {
                **plain,
                "messages": [
                    hi,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "ok"},
                ],
            },
        )
    yield (
        "tool call empty id and name",
        {
            **plain,
            "messages": [
                hi,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "", "type": "function", "function": {"name": "", "arguments": "{}"}}],
                },
            ],
        },
    )
    yield "n 3", {**plain, "messages": [hi], "n": 3}
    yield "n 128", {**plain, "messages": [hi], "n": 128}
    yield "logprobs", {**plain, "messages": [hi], "logprobs": True, "top_logprobs": 20}
    yield "max_tokens int64 max", {**plain, "messages": [hi], "max_tokens": 2**63 - 1}
    yield "max_completion_tokens int64 max", {"model": model, "messages": [hi], "max_completion_tokens": 2**63 - 1}
    yield "seed int64 min", {**plain, "messages": [hi], "seed": -(2**63)}
    yield "function role", {**plain, "messages": [hi, {"role": "function", "name": "f", "content": "1"}]}
    yield "developer only", {**plain, "messages": [{"role": "developer", "content": "rules"}]}
    yield "system only", {**plain, "messages": [{"role": "system", "content": "rules"}]}
    yield (
        "system parts late",
        {
            **plain,
            "messages": [
                hi,
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]},
            ],
        },
    )
    yield "assistant last", {**plain, "messages": [hi, {"role": "assistant", "content": "Sure,"}]}
    yield "assistant only", {**plain, "messages": [{"role": "assistant", "content": None}]}
    yield "empty content", {**plain, "messages": [{"role": "user", "content": ""}]}
    yield (
        "assistant parts and calls",
        {
            **plain,
            "messages": [
                hi,
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "calling"}, {"type": "refusal", "refusal": "no"}],
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
            ],
        },
    )
    yield "reasoning_effort bogus", {**plain, "messages": [hi], "reasoning_effort": "extreme"}
    yield (
        "tool choice names no tool",
        {**plain, "messages": [hi], "tool_choice": {"type": "function", "function": {"name": "ghost"}}},
    )
    yield "tool choice required without tools", {**plain, "messages": [hi], "tool_choice": "required"}
    yield "non-function tool", {**plain, "messages": [hi], "tools": [{"type": "web_search", "web_search": {}}]}
    yield (
        "tool without parameters",
        {**plain, "messages": [hi], "tools": [{"type": "function", "function": {"name": "f"}}]},
    )
    yield "parallel false without tools", {**plain, "messages": [hi], "parallel_tool_calls": False}
    yield "json_object", {**plain, "messages": [hi], "response_format": {"type": "json_object"}}
    yield (
        "odd keys",
        {
            **plain,
            "messages": [{"role": "user", "content": "hi", "name": "\u0000", "\u0000": 1}],
            "logit_bias": {"\u0000": 1, "": 2, "not a token": -100},
            "metadata": {"": "x", "\u2603" * 100: "\u0000"},
            "user": "\u0000\n",
        },
    )
    yield "stream with usage", {**plain, "messages": [hi], "stream": True, "stream_options": {"include_usage": True}}
    for key, value in (
        ("generationConfig", "a string"), ("generationConfig", [1, 2]), ("generationConfig", {"topK": "x"}),
        ("generation_config", 5), ("top_k", "x"), ("top_k", -1), ("safetySettings", 5), ("thinking", "yes"),
        ("thinking", {"type": "enabled", "budget_tokens": -5}), ("contents", "overwrite"), ("system", 5),
        ("messages_extra", {"deep": [[[[]]]]}), ("anthropic_version", None),
    ):  # fmt: skip
        yield f"extra {key}={value!r}", {**plain, "messages": [hi], key: value}


def anthropic_odd(model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Valid Messages API requests that a translating provider must refuse cleanly or carry across."""
    plain = {"model": model, "max_tokens": 20}
    hi = {"role": "user", "content": "hi"}

    def user(*blocks: Any) -> dict[str, Any]:
        return {"role": "user", "content": list(blocks)}

    call = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}
    yield (
        "tool_result referencing nothing",
        {**plain, "messages": [user({"type": "tool_result", "tool_use_id": "ghost", "content": "x"})]},
    )
    yield (
        "tool_result after text",
        {
            **plain,
            "messages": [
                hi,
                {"role": "assistant", "content": "ok"},
                user({"type": "tool_result", "tool_use_id": "ghost"}),
            ],
        },
    )
    yield "tool_result with image", {
        **plain,
        "messages": [
            hi,
            call,
            user({"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}),
        ],
    }  # fmt: skip
    yield (
        "tool_result empty content list",
        {**plain, "messages": [hi, call, user({"type": "tool_result", "tool_use_id": "t1", "content": []})]},
    )
    yield (
        "tool_result unknown block",
        {
            **plain,
            "messages": [hi, call, user({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "zzz"}]})],
        },
    )
    yield "unknown block type", {**plain, "messages": [user({"type": "mystery", "x": 1})]}
    yield (
        "unknown block in assistant",
        {**plain, "messages": [hi, {"role": "assistant", "content": [{"type": "mystery"}]}]},
    )
    yield (
        "image url source",
        {**plain, "messages": [user({"type": "image", "source": {"type": "url", "url": "https://x/a.png"}})]},
    )
    yield (
        "image bad base64",
        {
            **plain,
            "messages": [
                user({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}})
            ],
        },
    )
    yield (
        "image base64 empty media type",
        {**plain, "messages": [user({"type": "image", "source": {"type": "base64", "media_type": "", "data": PNG}})]},
    )
    yield "image no source", {**plain, "messages": [user({"type": "image"})]}
    yield (
        "image file source",
        {**plain, "messages": [user({"type": "image", "source": {"type": "file", "file_id": "f"}})]},
    )
    yield (
        "document text source",
        {
            **plain,
            "messages": [
                user({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}})
            ],
        },
    )
    yield (
        "document url source",
        {**plain, "messages": [user({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}})]},
    )
    yield (
        "document base64 not pdf",
        {
            **plain,
            "messages": [
                user({"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "QQ=="}})
            ],
        },
    )
    yield (
        "document pdf bad base64",
        {
            **plain,
            "messages": [
                user({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "!!"}})
            ],
        },
    )
    yield "tool_choice names no tool", {**plain, "messages": [hi], "tool_choice": {"type": "tool", "name": "ghost"}}
    yield "tool_choice any without tools", {**plain, "messages": [hi], "tool_choice": {"type": "any"}}
    yield (
        "tool_choice none disable parallel",
        {**plain, "messages": [hi], "tool_choice": {"type": "none", "disable_parallel_tool_use": True}},
    )
    yield "server tool", {**plain, "messages": [hi], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    yield (
        "custom tool",
        {**plain, "messages": [hi], "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]},
    )
    yield "thinking no budget", {**plain, "messages": [hi], "thinking": {"type": "enabled"}}
    yield "thinking disabled", {**plain, "messages": [hi], "thinking": {"type": "disabled"}}
    yield "system empty list", {**plain, "messages": [hi], "system": []}
    yield "system empty string", {**plain, "messages": [hi], "system": ""}
    yield "assistant empty content", {**plain, "messages": [hi, {"role": "assistant", "content": []}]}
    yield "assistant first", {**plain, "messages": [{"role": "assistant", "content": "x"}, hi]}
    yield "assistant last", {**plain, "messages": [hi, {"role": "assistant", "content": "Sure,"}]}
    yield (
        "redacted thinking",
        {
            **plain,
            "messages": [hi, {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "abc"}]}, hi],
        },
    )
    yield (
        "tool_use input nested",
        {
            **plain,
            "messages": [
                hi,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": [[[{}]]]}}],
                },
            ],
        },
    )
    yield (
        "tool_use empty id and name",
        {
            **plain,
            "messages": [
                hi,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "", "name": "", "input": {}}]},
            ],
        },
    )
    yield "metadata user null", {**plain, "messages": [hi], "metadata": {"user_id": None, "other": [1]}}
    yield "top_k int64 max", {**plain, "messages": [hi], "top_k": 2**63 - 1}
    yield "max_tokens int64 max", {"model": model, "max_tokens": 2**63 - 1, "messages": [hi]}
    yield "stream", {**plain, "messages": [hi], "stream": True}
    yield "unknown fields", {**plain, "messages": [hi], "service_tier": 5, "container": {"x": []}, "n": 3}
    yield "openai fields", {**plain, "messages": [hi], "response_format": {"type": "json_object"}, "logprobs": "yes"}


# ------------------------------------------------------------------------ the endpoints beside chat (endpoints.proto)
# Base bodies from OpenAI's API reference (completions, images, audio/speech, moderations) and vLLM's rerank API.


def completions_base(model: str) -> dict[str, Any]:
    """A valid legacy completions body using most fields."""
    return {
        "model": model,
        "prompt": ["Say hi", "Say bye"],
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 1,
        "best_of": 1,
        "logprobs": 1,
        "echo": False,
        "stop": ["zz"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "logit_bias": {"50256": -100},
        "seed": 7,
        "suffix": "!",
        "user": "u",
        "stream": False,
    }


def completions_stream_base(model: str) -> dict[str, Any]:
    """The same, streamed with usage."""
    return {**completions_base(model), "stream": True, "stream_options": {"include_usage": True}}


def images_base(model: str) -> dict[str, Any]:
    """A valid image generation body."""
    return {
        "model": model,
        "prompt": "a red fox",
        "n": 1,
        "size": "1024x1024",
        "quality": "standard",
        "response_format": "b64_json",
        "style": "vivid",
        "user": "u",
    }


def speech_base(model: str) -> dict[str, Any]:
    """A valid speech body."""
    return {"model": model, "input": "Hello there.", "voice": "alloy", "response_format": "mp3", "speed": 1.0}


def moderations_base(model: str) -> dict[str, Any]:
    """A valid moderation body with multi-modal input."""
    return {
        "model": model,
        "input": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
    }


def rerank_base(model: str) -> dict[str, Any]:
    """A valid rerank body (vLLM's Cohere/Jina shape)."""
    return {
        "model": model,
        "query": "a fox",
        "documents": ["a dog", {"text": "a fox"}],
        "top_n": 1,
        "return_documents": True,
    }


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "hostile") -> bytes:
    """A multipart/form-data body of (name, filename, bytes) parts."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def transcription_bodies(model: str, endpoint: str, max_audio: int) -> Iterator[Body]:
    """Uploads a transcription must refuse cleanly (or serve): missing parts, fields of the wrong kind, a file over
    the limit, and multipart that is not."""
    form = ("content-type", "multipart/form-data; boundary=hostile")
    audio = ("file", "a.wav", b"RIFF" + bytes(64))
    fields = {
        "response_format": [b"json", b"text", b"srt", b"vtt", b"verbose_json", b"xml", b""],
        "temperature": [b"0.2", b"hot", b"NaN", b"1e999", b"-1", b""],
        "language": [b"en", b"x" * 40_000, b"\xff\xfe"],
        "timestamp_granularities[]": [b"word", b"segment", b"epoch"],
        "prompt": [b"hi", b"\x00", b"\xff"],
        "model": [model.encode(), b"", b"sk-" + b"a" * 40, b"m" * 300],
    }
    for name, values in fields.items():
        for i, value in enumerate(values):
            parts = [("model", None, model.encode()), audio] if name != "model" else [audio]
            body = multipart([*parts, (name, None, value)])
            yield Body(f"{endpoint} form {name}=#{i}", endpoint, body, (form,))
    cases: dict[str, tuple[bytes, str]] = {
        "no file": (multipart([("model", None, model.encode())]), form[1]),
        "no model": (multipart([audio]), form[1]),
        "empty file": (multipart([("model", None, model.encode()), ("file", "a.wav", b"")]), form[1]),
        "file over the limit": (
            multipart([("model", None, model.encode()), ("file", "a.wav", bytes(max_audio + 1))]),
            form[1],
        ),
        "field over its limit": (multipart([("model", None, b"m" * 70_000), audio]), form[1]),
        "file as a field": (multipart([("model", None, model.encode()), ("file", None, b"x")]), form[1]),
        "nameless part": (b"--hostile\r\nContent-Disposition: form-data\r\n\r\nx\r\n--hostile--\r\n", form[1]),
        "no closing boundary": (multipart([("model", None, model.encode()), audio])[:-12], form[1]),
        "no boundary": (b"x", "multipart/form-data"),
        "wrong boundary": (multipart([audio], "other"), form[1]),
        "json": (dumps({"model": model, "file": "x"}), "application/json"),
        "urlencoded": (b"model=x", "application/x-www-form-urlencoded"),
        "empty": (b"", form[1]),
        "garbage": (bytes(range(256)) * 4, form[1]),
    }
    for name, (body, content_type) in cases.items():
        yield Body(f"{endpoint} upload {name}", endpoint, body, (("content-type", content_type),))
