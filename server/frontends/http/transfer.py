"""Request bodies within a size limit, ``Content-Encoding`` decoding, and the response coding.

The HTTP site turns aiohttp's own request decompression off (``auto_decompress=False``) and the
body is decoded here instead: aiohttp hands on whatever a truncated stream decoded to and logs a
corrupt one as an unhandled server error after the response, while here each is a precise 400.
The size limit holds twice: for the bytes on the wire and for what they decode to.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import hdrs, web
from aiohttp.web import ContentCoding

from server.errors import ServerError

# Seconds a request body gets to arrive (--http-body-timeout-secs), set on the application.
BODY_TIMEOUT = web.AppKey("body_timeout_secs", float)
_RESPONSE_CODINGS = {"gzip": ContentCoding.gzip, "deflate": ContentCoding.deflate}
# Bodies larger than this are inflated on a worker thread (zlib releases the GIL), off the event loop.
_INLINE_INFLATE_BYTES = 256 * 1024


def too_large(max_bytes: int, what: str = "request body") -> web.HTTPRequestEntityTooLarge:
    """413 with the error body every other refusal has (the error middleware renders ``text``)."""
    message = f"{what} exceeds the server's limit of {max_bytes} bytes (--http-max-input-bytes)"
    return web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=max_bytes + 1, text=message)


async def read_body(request: web.Request, max_bytes: int) -> bytes | bytearray:
    """The whole decoded body. Raises 413 past ``max_bytes`` and INVALID_ARG for a body that cannot be decoded."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() or "identity"
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise ServerError.invalid_arg(f"unsupported Content-Encoding '{encoding}' (supported: gzip, deflate, identity)")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise too_large(max_bytes, f"request body of {declared} bytes")  # refused before a byte of it is read
    timeout = request.app.get(BODY_TIMEOUT, 60.0)
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(max_bytes) from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {timeout:g} s (--http-body-timeout-secs)") from None
    if encoding == "identity":
        return raw
    if len(raw) <= _INLINE_INFLATE_BYTES:
        return inflate(raw, encoding, max_bytes)
    return await asyncio.to_thread(inflate, raw, encoding, max_bytes)


def inflate(raw: bytes, encoding: str, max_bytes: int) -> bytes | bytearray:
    """Decode a gzip (one or more members) or deflate (zlib or raw) body of at most ``max_bytes``.

    Linear in the body's size and bounded in memory: input is fed in small chunks and output is
    produced straight into one buffer, so a bomb stops (413) as soon as the decoded size passes
    the limit, and many tiny gzip members cost no more than one large one. Blocking (CPU).
    """
    if not raw:
        return raw
    if encoding == "deflate":
        # RFC 9110 deflate is the zlib format, but some clients send raw deflate; Triton takes both.
        wbits = zlib.MAX_WBITS if _has_zlib_header(raw) else -zlib.MAX_WBITS
        return _inflate_stream(raw, wbits, encoding, max_bytes, members=False)
    return _inflate_stream(raw, 16 + zlib.MAX_WBITS, "gzip", max_bytes, members=True)


# Compressed input is fed to zlib this many bytes at a time: what is left over when a gzip member
# ends is copied once, so copies per member stay this small whatever the body's size.
_INFLATE_CHUNK = 16 * 1024
# Concatenated gzip members are legal but rare; more than this is a body built to cost CPU.
MAX_GZIP_MEMBERS = 64


def _inflate_stream(raw: bytes, wbits: int, encoding: str, max_bytes: int, members: bool) -> bytearray:
    out = bytearray()
    view = memoryview(raw)
    offset, carried, count = 0, b"", 0
    while True:
        count += 1
        if count > MAX_GZIP_MEMBERS:
            raise ServerError.invalid_arg(f"the request body has more than {MAX_GZIP_MEMBERS} gzip members")
        decompressor = zlib.decompressobj(wbits)
        while not decompressor.eof:
            if decompressor.unconsumed_tail:
                data: bytes | memoryview = decompressor.unconsumed_tail
            elif carried:
                data, carried = carried, b""
            elif offset < len(raw):
                data, offset = view[offset : offset + _INFLATE_CHUNK], offset + _INFLATE_CHUNK
            else:
                raise ServerError.invalid_arg(f"the request body is not valid {encoding} data: the compressed stream is truncated")
            try:
                out += decompressor.decompress(data, max_bytes + 1 - len(out))
            except zlib.error as exc:
                raise ServerError.invalid_arg(f"the request body is not valid {encoding} data: {exc}") from None
            if len(out) > max_bytes:
                raise too_large(max_bytes, "decoded request body")
        carried = decompressor.unused_data
        if not carried and offset >= len(raw):
            return out
        if not members:
            trailing = len(carried) + max(0, len(raw) - offset)
            raise ServerError.invalid_arg(f"the request body is not valid {encoding} data: {trailing} bytes follow the compressed stream")


def _has_zlib_header(raw: bytes) -> bool:
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0


def response_coding(accept_encoding: str | None) -> ContentCoding | None:
    """gzip or deflate when the client accepts one (the highest q wins, the first listed on a tie), else None."""
    if not accept_encoding:
        return None
    best: tuple[float, ContentCoding] | None = None
    for entry in accept_encoding.split(","):
        token, _, params = entry.strip().partition(";")
        coding = _RESPONSE_CODINGS.get(token.strip().lower())
        if coding is None:
            continue
        quality = _quality(params)
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, coding)
    return best[1] if best else None


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0
