"""Token counting for a chat request: asked of the first of the model's targets whose backend can count."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from gateway.engine.record import CallRecord
from gateway.engine.router import Attempt
from gateway.errors import GatewayError, InvalidRequestError
from gateway.providers.base import Provider, TokenCounter
from tollgate.gateway.v1 import gateway_pb2 as pb


async def count_with_first_counter(
    plan: Sequence[Attempt], providers: Mapping[str, Provider], params: pb.ChatCompletionParams, call: CallRecord
) -> pb.CountTokensResponse:
    """The count from the first counting target that answers; a model with none is told plainly (a 400).

    Counts differ between tokenizers, so a backend of another kind is never asked to stand in, and nothing is
    estimated: a count that is wrong is worse than none.
    """
    failure: GatewayError | None = None
    for attempt in plan:
        provider = providers[attempt.target.backend]
        if not isinstance(provider, TokenCounter):
            continue
        call.attempts += 1
        call.backend, call.provider_model = attempt.target.backend, attempt.target.model
        started = time.perf_counter()
        try:
            return pb.CountTokensResponse(input_tokens=await provider.count_tokens(attempt.target.model, params))
        except GatewayError as exc:
            if not exc.retryable:
                raise
            failure = exc
        finally:
            call.upstream_seconds += time.perf_counter() - started
    if failure is not None:
        raise failure
    raise InvalidRequestError(
        f"The model '{params.model}' has no backend that can count tokens (count_tokens needs an Anthropic backend)",
        code="count_tokens_unsupported",
        param="model",
    )
