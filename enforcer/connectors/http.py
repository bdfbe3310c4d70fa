"""A small, strict, bounded HTTP/1.1 message reader over asyncio streams: what
the connector proxy needs and nothing more. Requests come from model-written
tools, so every limit is explicit and anything ambiguous is refused (no
obsolete line folding, no bare LF, one Content-Length, no
Transfer-Encoding on requests)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

MAX_REQUEST_LINE = 8 << 10
MAX_HEADER_BYTES = 32 << 10
MAX_HEADERS = 100
# An upstream's response head may be larger (cookies, CSP...), still bounded.
MAX_RESPONSE_HEADER_BYTES = 64 << 10
MAX_RESPONSE_HEADERS = 200
# StreamReader's buffer limit: no single line may be longer.
STREAM_LIMIT = MAX_RESPONSE_HEADER_BYTES + 2

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_STATUS_LINE = re.compile(r"HTTP/1\.[01] ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")

# Hop-by-hop headers (RFC 9110 7.6.1), never forwarded either way, plus the
# framing headers the proxy sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})


class HttpError(Exception):
    """The peer's message is malformed or over a limit: answer `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Headers:
    items: tuple[tuple[str, str], ...]  # (name as sent, value), in order

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.items if k.lower() == name]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def connection_tokens(self) -> set[str]:
        """Header names listed in Connection: hop-by-hop as well."""
        out = set()
        for v in self.get_all("connection"):
            out.update(t.strip().lower() for t in v.split(",") if t.strip())
        return out


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: Headers

    def content_length(self) -> int:
        """The body's length (0 when none). Raises HttpError for
        Transfer-Encoding or a missing/duplicate/invalid Content-Length."""
        if self.headers.get_all("transfer-encoding"):
            raise HttpError(411, "Transfer-Encoding is not accepted: send the body with a Content-Length")
        values = self.headers.get_all("content-length")
        if not values:
            return 0
        if len(values) > 1:
            raise HttpError(400, "more than one Content-Length")
        if not values[0].isdigit() or len(values[0]) > 18:
            raise HttpError(400, f"invalid Content-Length {values[0][:40]!r}")
        return int(values[0])


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes


async def _line(reader: asyncio.StreamReader, limit: int, what: str, status: int) -> bytes | None:
    """One CRLF-terminated line, without its CRLF; None at EOF before any byte."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, f"{what} longer than {limit} bytes") from None
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise HttpError(400, f"connection closed inside the {what}") from None
    if len(line) > limit + 2:
        raise HttpError(status, f"{what} longer than {limit} bytes")
    if not line.endswith(b"\r\n"):
        raise HttpError(400, f"{what} not terminated by CRLF")
    return line[:-2]


async def _headers(reader: asyncio.StreamReader, max_bytes: int, max_count: int) -> Headers:
    items: list[tuple[str, str]] = []
    total = 0
    while True:
        line = await _line(reader, max_bytes, "header section", 431)
        if line is None:
            raise HttpError(400, "connection closed inside the header section")
        if not line:
            return Headers(tuple(items))
        total += len(line) + 2
        if total > max_bytes:
            raise HttpError(431, f"header section larger than {max_bytes} bytes")
        if len(items) >= max_count:
            raise HttpError(431, f"more than {max_count} header fields")
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete header line folding")
        text = line.decode("latin-1")
        name, sep, value = text.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"malformed header field {text[:60]!r}")
        value = value.strip(" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise HttpError(400, f"control character in header field {name!r}")
        items.append((name, value))


async def read_request_head(reader: asyncio.StreamReader) -> RequestHead | None:
    """The request line and header section; None when the peer closed before
    sending anything. Raises HttpError (400, 414, 431) on anything else."""
    line = await _line(reader, MAX_REQUEST_LINE, "request line", 414)
    if line is None:
        return None
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if not _TOKEN.fullmatch(method) or not target or version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "malformed request line")
    if any(c <= " " or c >= "\x7f" for c in target):
        raise HttpError(400, "control, space or non-ASCII character in the request target")
    headers = await _headers(reader, MAX_HEADER_BYTES, MAX_HEADERS)
    return RequestHead(method, target, version, headers)


async def read_body(reader: asyncio.StreamReader, length: int) -> bytes:
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as e:
        raise HttpError(400, f"connection closed after {len(e.partial)} of {length} body bytes") from None


async def read_response(reader: asyncio.StreamReader, *, method: str, max_body: int) -> Response:
    """An upstream's response to `method`; interim 1xx responses skipped.
    Raises HttpError (status 502) when it is malformed or its body is larger
    than max_body."""
    try:
        while True:
            line = await _line(reader, MAX_RESPONSE_HEADER_BYTES, "status line", 502)
            if line is None:
                raise HttpError(502, "upstream closed the connection without a response")
            m = _STATUS_LINE.fullmatch(line.decode("latin-1"))
            if m is None:
                raise HttpError(502, f"malformed status line {line[:60]!r}")
            status, reason = int(m.group(1)), m.group(2) or ""
            headers = await _headers(reader, MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS)
            if status >= 200 or status == 101:
                break
        if status == 101:
            raise HttpError(502, "upstream switched protocols")
        if method == "HEAD" or status in (204, 304):
            return Response(status, reason, headers, b"")
        te = [t.strip().lower() for v in headers.get_all("transfer-encoding") for t in v.split(",")]
        if te:
            if te[-1] != "chunked":
                raise HttpError(502, f"unsupported Transfer-Encoding {te}")
            body = await _chunked(reader, max_body)
        else:
            lengths = set(headers.get_all("content-length"))
            if len(lengths) > 1:
                raise HttpError(502, "conflicting Content-Length")
            if lengths:
                value = lengths.pop()
                if not value.isdigit():
                    raise HttpError(502, f"invalid Content-Length {value[:40]!r}")
                n = int(value)
                if n > max_body:
                    raise HttpError(502, f"response body larger than {max_body} bytes")
                body = await reader.readexactly(n)
            else:  # delimited by the end of the connection
                body = await reader.read(max_body + 1)
                while len(body) <= max_body:
                    more = await reader.read(max_body + 1 - len(body))
                    if not more:
                        break
                    body += more
                if len(body) > max_body:
                    raise HttpError(502, f"response body larger than {max_body} bytes")
        return Response(status, reason, headers, body)
    except asyncio.IncompleteReadError:
        raise HttpError(502, "upstream closed the connection inside the response") from None


async def _chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        line = await _line(reader, 1024, "chunk size line", 502)
        if line is None:
            raise HttpError(502, "upstream closed the connection inside a chunked body")
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise HttpError(502, f"invalid chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if len(body) + size > max_body:
            raise HttpError(502, f"response body larger than {max_body} bytes")
        if size == 0:
            # Trailer section: read and dropped.
            await _headers(reader, MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS)
            return bytes(body)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(502, "chunk not followed by CRLF")
