"""The cache key: what changes an answer changes the key, what does not leaves it alone; and the scope."""

from __future__ import annotations

import pytest

from gateway.auth.principal import Principal
from gateway.cache.keys import cache_key, model_fingerprint, scope_of
from gateway.config import ModelConfig, TargetConfig, parse_config
from tollgate.gateway.v1 import gateway_pb2 as pb

MODEL = model_fingerprint(ModelConfig("gpt-4o-mini", (TargetConfig("primary", "gpt-4o-mini"),)))


def params(**fields: object) -> pb.ChatCompletionParams:
    made = pb.ChatCompletionParams(
        model="gpt-4o-mini", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="Say hello.")], temperature=0
    )
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(made, name).update(value)
        else:
            setattr(made, name, value)
    return made


BASE = cache_key("global", MODEL, params())


def test_the_same_request_has_the_same_key() -> None:
    assert cache_key("global", MODEL, params()) == BASE
    assert len(BASE) == 40


@pytest.mark.parametrize(
    "fields",
    [{"user": "alice"}, {"metadata": {"trace": "1"}}, {"store": True}],
)
def test_fields_that_do_not_change_the_answer_are_left_out(fields: dict[str, object]) -> None:
    assert cache_key("global", MODEL, params(**fields)) == BASE


def test_stream_options_are_left_out() -> None:
    request = params()
    request.stream_options.include_usage = True
    assert cache_key("global", MODEL, request) == BASE


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.5},
        {"seed": 7},
        {"n": 2},
        {"max_tokens": 10},
        {"logprobs": True},
        {"top_p": 0.9},
        {"extra_json": '{"top_k": 3}'},
        {"logit_bias": {"50256": -100.0}},
    ],
)
def test_fields_that_change_the_answer_change_the_key(fields: dict[str, object]) -> None:
    assert cache_key("global", MODEL, params(**fields)) != BASE


def test_messages_tools_stop_and_response_format_change_the_key() -> None:
    other = params()
    other.messages[0].content = "Say goodbye."
    tools = params()
    tools.tools.add(type="function").function.name = "lookup"
    stop = params()
    stop.stop.append("\n")
    json_mode = params()
    json_mode.response_format.type = "json_object"
    keys = {cache_key("global", MODEL, p) for p in (other, tools, stop, json_mode)}
    assert BASE not in keys and len(keys) == 4


def test_map_order_does_not_change_the_key() -> None:
    one = params(logit_bias={"1": 1.0, "2": 2.0})
    two = params(logit_bias={"2": 2.0, "1": 1.0})
    assert cache_key("global", MODEL, one) == cache_key("global", MODEL, two)


def test_the_configured_model_and_the_scope_are_in_the_key() -> None:
    moved = model_fingerprint(ModelConfig("gpt-4o-mini", (TargetConfig("other", "gpt-4o-mini"),)))
    assert cache_key("global", moved, params()) != BASE
    assert cache_key("team:ml", MODEL, params()) != BASE


BACKENDS = """
backends:
  - {name: primary, provider: openai, base_url: "http://127.0.0.1:1/v1"%s}
  - {name: spare, provider: openai, base_url: "http://127.0.0.1:2/v1"}
models:
  - {name: gpt-4o-mini, targets: [{backend: primary}], fallback: [spare-model]}
  - {name: spare-model, targets: [{backend: spare%s}]}
"""


def fingerprint(backend: str = "", fallback_target: str = "") -> bytes:
    config = parse_config(BACKENDS % (backend, fallback_target), {})
    return model_fingerprint(config.models[0], config)


@pytest.mark.parametrize(
    ("backend", "fallback_target"),
    [
        (", defaults: {temperature: 0.5}", ""),  # request shaping changes what the provider is asked
        (', base_url: "http://127.0.0.1:3/v1"', ""),  # another server
        (', provider: vllm, base_url: "http://127.0.0.1:1/v1"', ""),
        ("", ", model: other"),  # the fallback model's target
    ],
)
def test_how_the_backends_are_set_up_is_in_the_key(backend: str, fallback_target: str) -> None:
    base = cache_key("global", fingerprint(), params())
    assert cache_key("global", fingerprint(), params()) == base  # the same configuration, the same key
    assert cache_key("global", fingerprint(backend, fallback_target), params()) != base


ALICE = Principal(key_id="k1", user="alice", team="ml")


@pytest.mark.parametrize(
    ("principal", "wanted", "scope"),
    [
        (ALICE, "", "key:k1"),  # by default the narrowest
        (ALICE, "key", "key:k1"),
        (ALICE, "user", "user:alice"),
        (ALICE, "team", "team:ml"),
        (ALICE, "global", "global"),
        (Principal(key_id="k2", user="bob"), "team", "user:bob"),  # no team: narrower, never wider
        (Principal(key_id="k3"), "team", "key:k3"),
        (Principal(key_id=""), "", ""),  # no id: the cache decides (global under `auth: none`, else not cached)
        (None, "team", ""),
    ],
)
def test_scope(principal: Principal | None, wanted: str, scope: str) -> None:
    assert scope_of(principal, wanted) == scope
