"""`bench.codec_cost`: its conversations are valid chat requests of the size asked, and each pass is timed."""

from __future__ import annotations

from bench.codec_cost import conversation, measure
from gateway.codec.openai_decode import decode_chat_params
from gateway.validation import validate_chat
from tollgate.gateway.v1 import gateway_pb2 as pb


def test_a_conversation_is_a_valid_request_of_that_many_turns() -> None:
    params, stream = decode_chat_params(conversation(30))
    validate_chat(params)
    assert not stream and len(params.messages) == 30
    roles = [m.role for m in params.messages[:4]]
    assert roles == [pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_USER]


def test_each_pass_is_timed_and_a_longer_conversation_costs_more() -> None:
    short, long = measure(2, 200), measure(30, 200)
    assert set(short) == set(long) == {"decode", "validate", "encode"}
    assert sum(long.values()) > sum(short.values()) > 0
