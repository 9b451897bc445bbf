"""What a chat request's messages cost on their way through tollgate, measured in one process:
`python -m bench.codec_cost`.

Times the three passes every request makes over its messages — the front door's JSON to `ChatCompletionParams`
(`decode_chat_params`), the engine's checks (`validate_chat`) and the OpenAI provider's body (`encode_chat_params`)
— for a conversation of 2 messages (the end-to-end bench's request) and of 30 (a chat that sends its history again
with every turn). Precise where the end-to-end bench is noisy, and it shows what the end-to-end bench's short
request cannot: the cost of a message.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from gateway.codec.openai_decode import decode_chat_params
from gateway.codec.openai_encode import encode_chat_params
from gateway.validation import validate_chat

_ROUNDS = 5


def conversation(messages: int) -> dict[str, Any]:
    """A chat request whose history holds `messages` messages: a system prompt, then users and assistants in turn."""
    turns: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(messages - 1):
        role = "user" if i % 2 == 0 else "assistant"
        turns.append({"role": role, "content": f"Message {i} of a longer conversation about the gateway."})
    return {"model": "gpt-4o-mini", "messages": turns, "temperature": 0.7}


def _least(work: Callable[[], object], calls: int) -> float:
    """The least CPU of `_ROUNDS` rounds of `calls` calls, in µs a call."""
    best = float("inf")
    for _ in range(_ROUNDS):
        started = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def measure(messages: int, calls: int) -> dict[str, float]:
    """µs a request for each pass, with `messages` messages."""
    body = conversation(messages)
    params, _ = decode_chat_params(body)
    return {
        "decode": _least(lambda: decode_chat_params(body), calls),
        "validate": _least(lambda: validate_chat(params), calls),
        "encode": _least(lambda: encode_chat_params(params, "gpt-4o-mini", stream=False), calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls a round (default 5000)")
    args = parser.parse_args()
    print(f"messages' CPU per request, {args.calls} calls each, least of {_ROUNDS} rounds (process time):")
    print(f"  {'messages':>8}  {'decode':>8}  {'validate':>8}  {'encode':>8}  {'all':>8}  {'a message':>9}")
    for messages in (2, 30):
        got = measure(messages, args.calls)
        total = sum(got.values())
        print(
            f"  {messages:>8}  {got['decode']:>6.1f}µs  {got['validate']:>6.1f}µs  {got['encode']:>6.1f}µs"
            f"  {total:>6.1f}µs  {total / messages:>7.2f}µs"
        )


if __name__ == "__main__":
    main()
