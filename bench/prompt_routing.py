"""Routing on the prompt and on-demand boot, measured in one process: `python -m bench.prompt_routing` (and the end
of `make bench`).

- **Semantic decision**: the CPU of one `SemanticDecider.choose` (the rule's work: the prompt's vector against every
  example, the best choice) with an embedding function that answers at once from a precomputed vector, so the
  embedding call itself is left out, for 10, 100 and 1,000 examples of 1,536 dimensions. The budget is 0.5 ms.
- **Held requests' wait beyond the boot**: N calls held by a `Waker` while a fake backend "boots" (starts listening
  after `--boot` seconds); how long after it answers its first readiness probe each held call is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from collections.abc import Sequence

import numpy as np

from gateway.config import BackendConfig
from gateway.config.routing import SemanticChoice, SemanticRoute
from gateway.config.routing_wake import WakeAction, WakeConfig
from gateway.providers.openai_compat import OpenAICompatibleProvider
from gateway.providers.wake import Waker, WakingProvider
from gateway.routing.decision import Question
from gateway.routing.semantic import SemanticDecider
from gateway.testing.fake_openai import FakeOpenAI
from tollgate.gateway.v1 import gateway_pb2 as pb

DIMENSIONS = 1536
BUDGET_MS = 0.5


async def decision_cpu_ms(examples: int, calls: int, rng: np.random.Generator) -> float:
    """Mean CPU milliseconds of one decision over `examples` examples (four choices)."""
    vectors = {f"e{i}": rng.standard_normal(DIMENSIONS).astype(np.float32).tolist() for i in range(examples)}
    prompt = rng.standard_normal(DIMENSIONS).astype(np.float32).tolist()
    choices = tuple(
        SemanticChoice(to=f"model-{c}", examples=tuple(f"e{i}" for i in range(c, examples, 4))) for c in range(4)
    )

    async def embed(model: str, texts: list[str]) -> list[list[float]]:
        return [vectors.get(t, prompt) for t in texts]

    decider = SemanticDecider("bench", SemanticRoute(embedding_model="e", choices=choices, threshold=0.0), embed)
    await decider.prepare()
    question = Question(text="a prompt", allowed=tuple(c.to for c in choices))
    for _ in range(20):
        await decider.choose(question)
    started = time.process_time()
    for _ in range(calls):
        await decider.choose(question)
    return (time.process_time() - started) / calls * 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def held_wait(held: int, boot: float, poll: float) -> list[float]:
    """Seconds from the backend's readiness to each held call's answer."""
    port = _free_port()
    backend = BackendConfig(name="sleepy", provider="vllm", base_url=f"http://127.0.0.1:{port}/v1")
    wake = WakeConfig(action=WakeAction(command=("true",)), timeout=30.0, poll_interval=poll)
    provider = WakingProvider(OpenAICompatibleProvider(backend), Waker(backend, wake))
    fake = FakeOpenAI(chunks=2, record_requests=False)
    ready_at = 0.0

    async def start_backend() -> None:
        nonlocal ready_at
        await asyncio.sleep(boot)
        await fake.start(port=port)
        ready_at = time.perf_counter()

    params = pb.ChatCompletionParams(model="m", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")])

    async def call() -> float:
        await provider.complete("m", params)
        return time.perf_counter()

    try:
        booting = asyncio.create_task(start_backend())
        answered = await asyncio.gather(*(call() for _ in range(held)))
        await booting
    finally:
        await provider.close()
        await fake.stop()
    return [t - ready_at for t in answered]


async def run(calls: int, held: int, boot: float, poll: float) -> str:
    """Both measurements, as the report's text."""
    rng = np.random.default_rng(1)
    lines = ["== prompt routing and on-demand boot (bench.prompt_routing) ==", ""]
    lines.append(f"semantic decision, embedding call aside ({DIMENSIONS} dims, budget {BUDGET_MS} ms CPU):")
    for examples in (10, 100, 1000):
        ms = await decision_cpu_ms(examples, calls, rng)
        verdict = "ok" if ms <= BUDGET_MS else "OVER BUDGET"
        lines.append(f"  {examples:>5} examples: {ms:.3f} ms CPU per decision  {verdict}")
    waits = await held_wait(held, boot, poll)
    lines.append("")
    lines.append(
        f"{held} requests held through a {boot:g} s boot (readiness polled every {poll:g} s): answered "
        f"{statistics.median(waits) * 1000:.0f} ms (median), {max(waits) * 1000:.0f} ms (max) after the backend was up"
    )
    return "\n".join(lines)


def report(quick: bool = False) -> str:
    """What `make bench` prints at its end."""
    poll = WakeConfig(WakeAction()).poll_interval
    return asyncio.run(run(calls=200 if quick else 1000, held=40, boot=1.0, poll=poll))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="decisions measured per size")
    parser.add_argument("--held", type=int, default=40, help="requests held through the boot")
    parser.add_argument("--boot", type=float, default=1.0, help="seconds the backend takes to start")
    parser.add_argument("--poll", type=float, default=WakeConfig(WakeAction()).poll_interval)
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.calls, args.held, args.boot, args.poll)))


if __name__ == "__main__":
    main()
