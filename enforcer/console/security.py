"""What every console response carries, what every request may bring, and
where a login may send the browser back to.

The pages show attacker-controlled text (arguments, triggering inputs), so
the CSP allows only the console's own script and stylesheet: no inline
script or style, no other origin, no framing, no <base>. Links carry
single-use tokens, so no Referer leaves the console and nothing is cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_REPLACED = {name for name, _ in SECURITY_HEADERS} | {b"server", b"etag", b"last-modified"}

# A console form is a few fields; anything bigger is not one of ours.
MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware: the headers above on every response (pages, static
    files, errors, SSE), replacing any the app set; and POST bodies bounded
    before the app reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                message["headers"] = headers + list(SECURITY_HEADERS)
            await send(message)

        if scope["method"] not in ("GET", "HEAD"):
            refusal = _body_refusal(scope)
            if refusal is not None:
                status, text = refusal
                await _plain(send_with_headers, status, text)
                return
        await self.app(scope, receive, send_with_headers)


def _body_refusal(scope: Scope) -> tuple[int, str] | None:
    length = None
    for k, v in scope.get("headers", []):
        if k.lower() == b"content-length":
            try:
                length = int(v)
            except ValueError:
                return 400, "bad Content-Length"
        elif k.lower() == b"transfer-encoding":
            return 411, "send a Content-Length"  # browsers always do for forms
    if length is None:
        return None  # no body at all (a bodiless POST, e.g. logout from a script)
    if length > MAX_BODY_BYTES:
        return 413, "request body too large"
    return None


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def safe_next(target: object, default: str = "/") -> str:
    """A post-login destination on this console only: an absolute path, not
    `//host` or `/\\host` (which browsers read as another origin), no
    scheme or host, no control characters. Anything else: `default`."""
    if not isinstance(target, str) or not target.startswith("/") or len(target) > 4096:
        return default
    if target.startswith(("//", "/\\")) or any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


__all__ = ["CSP", "MAX_BODY_BYTES", "SECURITY_HEADERS", "SecurityHeaders", "safe_next"]
