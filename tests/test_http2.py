"""`gateway.http2.Connection`'s header blocks: a block that leaves the HPACK table as it was is kept decoded, and
taken again only while the table is as it was read against."""

from __future__ import annotations

import hpack

from gateway.http2 import Connection


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
