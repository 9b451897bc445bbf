"""An embedding reply as a vector, and numpy kept out of gateways that have no semantic cache."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys

import pytest

from gateway.cache.embedding import vector_of
from tollgate.gateway.v1 import gateway_pb2 as pb


def test_floats_and_base64_replies_give_the_same_vector() -> None:
    values = [0.5, -1.25, 3.0]
    packed = base64.b64encode(struct.pack("<3f", *values)).decode()
    assert vector_of(pb.CreateEmbeddingsResponse(data=[pb.Embedding(values=values)])) == values
    assert vector_of(pb.CreateEmbeddingsResponse(data=[pb.Embedding(base64=packed)])) == values
    with pytest.raises(ValueError, match="no data"):
        vector_of(pb.CreateEmbeddingsResponse())


def test_a_gateway_without_a_semantic_cache_does_not_import_numpy() -> None:
    code = (
        "import sys\n"
        "from gateway.config import parse_config\n"
        "from gateway.assemble import assemble\n"
        "assemble(parse_config('cache: {}\\nbackends: [{name: d, provider: mock}]\\n"
        "models: [{name: d, targets: [{backend: d}], cache: {ttl: 1m}}]', {}))\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
