"""Model globs and the principal an auth decision describes."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from gateway.auth.principal import ANONYMOUS, Limits, ModelAccess, Principal
from tollgate.auth.v1 import auth_pb2


@pytest.mark.parametrize(
    ("allowed", "denied", "model", "permitted"),
    [
        ((), (), "anything/at/all", True),
        (("gpt-4o-mini",), (), "gpt-4o-mini", True),
        (("gpt-4o-mini",), (), "gpt-4o", False),
        (("gpt-4o*",), (), "gpt-4o-mini", True),
        (("gpt-4o*",), (), "gpt-4", False),
        (("openai/*",), (), "openai/gpt-4o", True),
        (("openai/*",), (), "openai/ft/gpt-4o", False),  # `*` stays within one segment
        (("openai/**",), (), "openai/ft/gpt-4o", True),  # `**` crosses segments
        (("**",), (), "a/b/c", True),
        (("*",), (), "a/b", False),
        (("gpt-4o*",), ("gpt-4o",), "gpt-4o", False),  # deny wins
        (("gpt-4o*",), ("gpt-4o",), "gpt-4o-mini", True),
        ((), ("*-preview",), "o1-preview", False),
        ((), ("*-preview",), "o1", True),
        (("a.b",), (), "aXb", False),  # glob text is literal, not a regex
        (("a+b",), (), "a+b", True),
        (("claude-*", "gpt-*"), (), "gpt-4o", True),
        (("claude-*", "gpt-*"), (), "mistral", False),
    ],
)
def test_model_globs(allowed: tuple[str, ...], denied: tuple[str, ...], model: str, permitted: bool) -> None:
    assert ModelAccess(allowed, denied).permits(model) is permitted


def test_a_decision_becomes_a_principal() -> None:
    reply = auth_pb2.CheckResponse(
        key_id="3f2a9c0d1e2b4a5c",
        user="alice",
        team="ml",
        allowed_models=["gpt-*"],
        denied_models=["gpt-4o"],
        limits=auth_pb2.Limits(
            requests_per_minute=60,
            tokens_per_minute=1000,
            concurrent_requests=4,
            budget=auth_pb2.Budget(limit_usd=50, period=auth_pb2.BUDGET_PERIOD_MONTH),
        ),
        labels={"env": "prod"},
        cache_ttl=Duration(seconds=10),
    )
    principal = Principal.from_decision(reply)
    assert principal.key_id == "3f2a9c0d1e2b4a5c"
    assert (principal.user, principal.team) == ("alice", "ml")
    assert principal.limits == Limits(60, 1000, 4, 50.0, "month")
    assert dict(principal.labels) == {"env": "prod"}
    assert principal.access.permits("gpt-4o-mini")
    assert not principal.access.permits("gpt-4o")


def test_no_budget_means_no_period_and_anonymous_may_use_everything() -> None:
    principal = Principal.from_decision(auth_pb2.CheckResponse(key_id="k"))
    assert principal.limits == Limits()
    assert ANONYMOUS.access.permits("any/model")
