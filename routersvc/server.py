"""The reference `RouterService`: embed the prompt, pick the nearest choice (gateway.routing.nearest), answer.

Embeddings come from an OpenAI-compatible `POST {url}/embeddings`; the examples are embedded once at start, in
batches. A prompt whose embedding fails is UNAVAILABLE (the gateway then falls back); one that is close to nothing
gets an empty choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
import grpc

from gateway.grpc_server import GrpcServer, start_grpc_server
from gateway.routing.decision import DecisionFailed
from gateway.routing.nearest import ExampleIndex
from gateway.routing.semantic import embed_examples
from routersvc.examples import Examples
from tollgate.router.v1 import router_pb2 as pb
from tollgate.router.v1 import router_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouterService"].full_name
log = logging.getLogger("tollgate.routersvc")
_BATCH = 64


@dataclass(frozen=True, slots=True)
class EmbeddingSource:
    """An OpenAI-compatible embeddings endpoint: `url` is the API base (`http://127.0.0.1:8080/v1`)."""

    url: str
    model: str
    api_key: str = ""
    timeout: float = 5.0


class Embedder:
    """Embeddings over HTTP, on one pooled session."""

    def __init__(self, source: EmbeddingSource) -> None:
        self._source = source
        headers = {"Authorization": f"Bearer {source.api_key}"} if source.api_key else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=source.timeout))

    async def __call__(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        url = f"{self._source.url.rstrip('/')}/embeddings"
        try:
            async with self._session.post(url, json={"model": model, "input": texts}) as resp:
                if resp.status != 200:
                    raise DecisionFailed("embedding_failed", f"{url} answered {resp.status}")
                body = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise DecisionFailed("embedding_failed", repr(exc)) from exc
        items = sorted(body.get("data") or [], key=lambda item: item.get("index", 0))
        if len(items) != len(texts):
            raise DecisionFailed("embedding_failed", f"asked for {len(texts)} embeddings, got {len(items)}")
        return [[float(v) for v in item["embedding"]] for item in items]

    async def close(self) -> None:
        """Close the session."""
        await self._session.close()


class RouterServicer(pb_grpc.RouterServiceServicer):
    """Classify by the nearest examples."""

    def __init__(self, index: ExampleIndex, embed: Embedder, model: str, threshold: float) -> None:
        self._index = index
        self._embed = embed
        self._model = model
        self._threshold = threshold

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext[pb.ClassifyRequest, pb.ClassifyResponse]
    ) -> pb.ClassifyResponse:
        """The nearest choice among the request's (all when it names none) at or above the threshold."""
        if not request.text.strip():
            return pb.ClassifyResponse()
        try:
            (vector,) = await self._embed(self._model, [request.text])
        except DecisionFailed as exc:
            log.warning("rule %r: %s", request.rule, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the embedding service failed")
        allowed = tuple(request.choices) or None
        try:
            choice, score = self._index.best(vector, self._threshold, allowed)
        except ValueError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the embedding has another length than the examples'")
        return pb.ClassifyResponse(choice=choice, score=max(score, 0.0))


class RouterServer:
    """A started classifier server."""

    def __init__(self, grpc_server: GrpcServer, embedder: Embedder, index: ExampleIndex) -> None:
        self.grpc_server = grpc_server
        self.index = index
        self._embedder = embedder

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.grpc_server.port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, drain for up to `grace` seconds, stop, close the embeddings session."""
        await self.grpc_server.stop(grace)
        await self._embedder.close()


async def start_router_server(examples: Examples, source: EmbeddingSource, address: str) -> RouterServer:
    """Embed the examples (raises `DecisionFailed` when the embeddings endpoint fails), then serve on `address`."""
    embedder = Embedder(source)
    try:
        index = await embed_examples(embedder, source.model, list(examples.choices), _BATCH)
    except BaseException:
        await embedder.close()
        raise
    servicer = RouterServicer(index, embedder, source.model, examples.threshold)
    grpc_server = await start_grpc_server(
        address, [(SERVICE_NAME, lambda server: pb_grpc.add_RouterServiceServicer_to_server(servicer, server))]
    )
    return RouterServer(grpc_server, embedder, index)
