"""Classifier route rules: ask a team's own `tollgate.router.v1.RouterService` which model serves the prompt.

One channel per rule, made on first use (a grpc.aio channel belongs to the running event loop); every call has the
rule's deadline, and any failure, a late answer or a choice outside the request's is a `DecisionFailed`.
"""

from __future__ import annotations

import grpc

from gateway.config.routing import ClassifierRoute
from gateway.routing.decision import DecisionFailed, Embed, Pick, Question
from tollgate.router.v1 import router_pb2, router_pb2_grpc

_CHANNEL_OPTIONS = (("grpc.keepalive_time_ms", 30_000), ("grpc.max_receive_message_length", 1 << 20))


class ClassifierDecider:
    """Asks the rule's classifier server."""

    def __init__(self, rule: str, route: ClassifierRoute) -> None:
        self.rule = rule
        self._route = route
        self._channel: grpc.aio.Channel | None = None

    def connect(self, embed: Embed) -> None:
        """A classifier embeds nothing itself."""

    async def prepare(self) -> None:
        """Nothing to do ahead: the channel connects on first use."""

    def _stub(self) -> router_pb2_grpc.RouterServiceAsyncStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._route.server, options=_CHANNEL_OPTIONS)
        return router_pb2_grpc.RouterServiceStub(self._channel)

    async def choose(self, question: Question) -> Pick:
        """The classifier's pick among the allowed choices."""
        request = router_pb2.ClassifyRequest(
            rule=self.rule,
            text=question.text,
            choices=question.allowed,
            requested_model=question.requested_model,
            prompt_tokens=question.prompt_tokens,
            user=question.user,
            team=question.team,
        )
        try:
            reply = await self._stub().Classify(request, timeout=self._route.timeout)
        except grpc.aio.AioRpcError as exc:
            late = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            raise DecisionFailed("timeout" if late else "unavailable", f"{exc.code().name}") from None
        if reply.choice and reply.choice not in question.allowed:
            raise DecisionFailed("bad_choice", f"{reply.choice!r} is not one of the request's choices")
        return Pick(reply.choice, reply.score)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
