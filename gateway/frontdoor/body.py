"""A request body as its Content-Encoding says to read it.

aiohttp's own decompression is turned off for the front door (`auto_decompress=False` in gateway.frontdoor.app):
it fails inside the server, after the handler has answered, so a body that is not the gzip it claims to be became
a 500 and a logged traceback, and an encoding aiohttp cannot decode (br without Brotli) a plain-text 400 in no API's
shape. Decoding here gives each of those the front door's own error, and bounds the decompressed size by the same
body limit as an uncompressed body.
"""

from __future__ import annotations

import zlib

from aiohttp import web

from gateway.errors import InvalidRequestError, RequestTooLargeError

# RFC 9110 §8.4.1: gzip (and its x-gzip alias) and deflate (zlib format); identity means none.
MAX_BODY = web.AppKey("max_body", int)  # the body limit, decompressed or not
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # the longest a client may take to send a body
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """`raw` decompressed as `content_encoding` says, at most `limit` bytes; a clear 4xx for anything else."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InvalidRequestError(
            "Content-Encoding: only gzip and deflate request bodies are accepted",
            code="unsupported_content_encoding",
            status=415,
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(raw, limit + 1)
    except zlib.error:
        raise InvalidRequestError(
            f"Request body is not valid {encoding} data, as its Content-Encoding says", code="invalid_body"
        ) from None
    if len(out) > limit:
        raise RequestTooLargeError(f"Request body is larger than {limit} bytes once decompressed")
    if not decompressor.eof:
        raise InvalidRequestError(f"Request body is truncated {encoding} data", code="invalid_body")
    return out
