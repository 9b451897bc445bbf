"""`gateway.http2.Connection`'s header blocks: a block that leaves the HPACK table as it was is kept decoded, and
taken again only while the table is as it was read against."""

from __future__ import annotations

import hpack
import pytest

from gateway.http2 import Connection, PeerError


async def test_a_kept_block_is_read_again_only_against_the_same_table() -> None:
    connection = Connection(b"", keepalive=60.0, ping_timeout=20.0)
    encoder = hpack.Encoder()
    first = encoder.encode([("a", "1")])  # a literal with indexing: the table changes, nothing is kept
    again = encoder.encode([("a", "1")])  # now an index into the table: kept
    assert connection._decode(first) == [(b"a", b"1")]
    assert connection._decode(again) == [(b"a", b"1")]
    assert connection._decode(again) == [(b"a", b"1")]
    assert again in connection._decoded
    connection._decode(encoder.encode([("b", "2")]))  # "b: 2" takes the index "a: 1" had
    assert connection._decode(again) == [(b"b", b"2")]  # the same bytes, read against the new table
    assert connection._decode(encoder.encode([("a", "1")])) == [(b"a", b"1")]


class _Transport:
    """What a connection writes, kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None


async def test_pings_that_follow_our_data_are_not_a_flood() -> None:
    """A client measuring its window pings as our DATA arrives (grpc's BDP probe): as many as it likes; PINGs with
    nothing of ours between them are a flood past the allowance."""
    connection = Connection(b"", keepalive=60.0, ping_timeout=20.0)
    connection.transport = _Transport()  # type: ignore[assignment]
    for _ in range(1000):
        connection._sending()
        connection._ping(0, 0, bytes(8))
    with pytest.raises(PeerError):
        for _ in range(1000):
            connection._ping(0, 0, bytes(8))
