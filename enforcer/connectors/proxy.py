"""The host side of connectors: a per-execution HTTP proxy on a Unix socket.

A sandboxed tool has no network and no secret. Its connectors are reached
through one Unix socket per execution (ConnectorGateway.endpoint), bound into
the sandbox and served there as an ordinary HTTP proxy on the sandbox's own
loopback (enforcer/sandbox/bridge.py). Here, on the host, every request is
parsed strictly, checked (the host names a connector, the tool may use it,
the method and path are on its allow list), forwarded to the connector's
upstream with the connector's credential added (the tool's own copy of that
header dropped), and recorded: `on_request` is awaited with a ProxiedRequest
before the tool sees the answer, so the audit entry is durable first. A
refused request is recorded the same way and answered with a JSON error.

One request per connection (the answer carries `Connection: close`); no
CONNECT (no TLS tunnel: the proxy must see the request), no request bodies
without Content-Length.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enforcer.audit.keys import require_private
from enforcer.connectors.http import (
    HOP_BY_HOP,
    STREAM_LIMIT,
    Headers,
    HttpError,
    RequestHead,
    read_body,
    read_request_head,
    read_response,
)
from enforcer.errors import ConfigError

log = logging.getLogger(__name__)

SOCKET_NAME = "connector.sock"
# How long a tool may take to send its request (head and body).
REQUEST_TIMEOUT_S = 30.0
# Upstream response bodies are buffered whole (the audit entry, with its
# size, is written before the tool sees any of it): at most this much.
MAX_RESPONSE_BYTES = 32 << 20
# After the answer, how long to keep reading (and dropping) what the tool
# still sends, so that closing does not reset the connection before it has
# read the answer.
LINGER_S = 1.0
# On endpoint exit, how long past its connector's timeout an in-flight
# forwarded request may take to be recorded.
RECORD_GRACE_S = 15.0
_SUN_PATH_MAX = 107

REFUSALS = ("unknown_connector", "not_allowed", "not_permitted_for_tool", "bad_request",
            "body_too_large", "upstream_error", "internal_error")

_PCHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%")
_HEX = frozenset("0123456789abcdefABCDEF")
# Percent-encoded bytes refused in a path: '.', '/', '\\', '%' (double
# encoding), and control characters (decoded by some upstreams into
# traversal or truncation).
_BAD_ENCODED = frozenset(b"./\\%") | frozenset(range(0x20)) | {0x7F}


@dataclass(frozen=True)
class Connector:
    """A connector as the proxy uses it, its credential read (load_connectors)."""

    name: str
    base_url: str
    allow: tuple[tuple[frozenset[str], str], ...]  # (methods, path prefix)
    header: str | None = None                      # the credential header, None: no credential
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    max_body_bytes: int = 1 << 20
    scheme: str = "Bearer"                         # "<header>: <scheme> <secret>"; "" for the bare secret

    def allows(self, method: str, path: str) -> bool:
        return any(method in methods and _under(path, prefix) for methods, prefix in self.allow)

    def credential_value(self) -> str | None:
        if self.secret is None:
            return None
        return f"{self.scheme} {self.secret}" if self.scheme else self.secret


@dataclass(frozen=True)
class ProxiedRequest:
    """One request a tool made through its endpoint, forwarded or refused."""

    connector: str             # the connector's name, or the host the tool asked for ("" if none)
    method: str
    path: str                  # as the tool sent it, without the query
    status: int                # what the tool was answered
    bytes_in: int              # request body bytes received from the tool
    bytes_out: int             # response body bytes sent back to the tool
    duration_ms: float
    refused: str | None        # one of REFUSALS, None when forwarded and answered
    upstream_status: int | None = None


OnRequest = Callable[[ProxiedRequest, Any], Awaitable[None]]


def _read_secret(name: str, cred: Any) -> str:
    if cred.file is not None:
        path = Path(cred.file)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"connector {name}: cannot read credential file {path}: {e.strerror}") from e
        try:
            require_private(path, os.fstat(fd), "credential file", error=ConfigError,
                            subject=f"connector {name}: credential file {path}",
                            too_open="has mode {mode}: it must be 0600 or stricter")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(64 << 10)
        finally:
            os.close(fd)
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"connector {name}: credential file {path} is not UTF-8 text") from None
        where = f"credential file {path}"
    else:
        if cred.env not in os.environ:
            raise ConfigError(f"connector {name}: environment variable {cred.env} (its credential) is not set")
        value = os.environ[cred.env].strip()
        where = f"environment variable {cred.env}"
    if not value:
        raise ConfigError(f"connector {name}: {where} is empty")
    if any(c < " " or c == "\x7f" for c in value):
        raise ConfigError(f"connector {name}: {where} holds a control character (not a header value)")
    return value


def load_connectors(mapping: Mapping[str, Any]) -> dict[str, Connector]:
    """Connectors from the config's `connectors` (name -> ConnectorConfig),
    each credential read once, now. Raises ConfigError for a credential file
    readable by group or others, a missing environment variable, an empty
    secret, or two names equal but for case (hosts are case-insensitive)."""
    out: dict[str, Connector] = {}
    seen: dict[str, str] = {}
    for name, cfg in mapping.items():
        if name.lower() in seen:
            raise ConfigError(f"connectors {seen[name.lower()]} and {name} differ only in case")
        seen[name.lower()] = name
        _upstream(name, cfg.base_url)  # validated now, not at the first request
        cred = cfg.credential
        out[name] = Connector(
            name=name,
            base_url=cfg.base_url,
            allow=tuple((frozenset(r.methods), r.path_prefix) for r in cfg.allow),
            header=cred.header if cred is not None else None,
            secret=_read_secret(name, cred) if cred is not None else None,
            timeout_s=cfg.timeout_s,
            max_body_bytes=cfg.max_body_bytes,
            scheme=cred.scheme if cred is not None else "",
        )
    return out


@dataclass(frozen=True)
class _Upstream:
    tls: bool
    host: str
    port: int
    netloc: str       # the Host header
    base_path: str    # without a trailing slash


def _upstream(name: str, base_url: str) -> _Upstream:
    u = urlsplit(base_url)
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.scheme not in ("http", "https") or not u.hostname or port == -1 or u.username or u.query or u.fragment:
        raise ConfigError(f"connector {name}: base_url {base_url!r} must be http(s)://host[:port][/path]")
    tls = u.scheme == "https"
    netloc = u.netloc
    return _Upstream(tls, u.hostname, port or (443 if tls else 80), netloc, u.path.rstrip("/"))


def _under(path: str, prefix: str) -> bool:
    """path is prefix or below it, on a segment boundary."""
    p = prefix.rstrip("/")
    return p == "" or path == p or path.startswith(p + "/")


def path_problem(path: str) -> str | None:
    """Why a request path is refused before any allow-list match, or None.
    Refused: anything but an absolute path of RFC 3986 path characters,
    percent-encoded '.', '/', '\\', '%' or control bytes, empty segments,
    and '.' or '..' segments (also with ';params', which some servers strip)."""
    if not path.startswith("/"):
        return "the path must start with /"
    if any(c not in _PCHAR and c != "/" for c in path):
        return "the path holds a character outside RFC 3986 path characters"
    i = path.find("%")
    while i != -1:
        pair = path[i + 1:i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            return "malformed percent-encoding in the path"
        if int(pair, 16) in _BAD_ENCODED:
            return "percent-encoded '.', '/', '\\', '%' or control byte in the path"
        i = path.find("%", i + 3)
    if "//" in path:
        return "empty path segment"
    for seg in path.split("/")[1:]:
        if seg.split(";", 1)[0] in (".", ".."):
            return "'.' or '..' path segment"
    return None


def _query_problem(query: str) -> str | None:
    if any(c not in _PCHAR and c not in "/?" for c in query):
        return "the query holds a character outside RFC 3986 query characters"
    return None


class _Refusal(Exception):
    def __init__(self, status: int, refused: str, message: str, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.refused = refused
        self.message = message
        self.upstream_status = upstream_status


def _split_target(head: RequestHead) -> tuple[str, str, str]:
    """(host, path, query) of a proxy request: absolute-form
    `http://host[:port]/path?query`, or origin-form with a Host header."""
    target = head.target
    if target.lower().startswith("http://"):
        rest = target[len("http://"):]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
        authority, rest = rest[:cut], rest[cut:]
        if rest.startswith("?") or not rest:
            rest = "/" + rest
    elif target.startswith("/"):
        authority = head.headers.get("host") or ""
        if len(head.headers.get_all("host")) > 1:
            raise _Refusal(400, "bad_request", "more than one Host header")
        rest = target
        if not authority:
            raise _Refusal(400, "bad_request", "origin-form request without a Host header")
    elif "://" in target:
        raise _Refusal(400, "bad_request", "only http:// proxy requests: the connector adds TLS upstream "
                                          "(use http://<connector>/path)")
    else:
        raise _Refusal(400, "bad_request", "request target is neither absolute-form nor origin-form")
    if "@" in authority:
        raise _Refusal(400, "bad_request", "user information in the request target")
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port:
        host = authority
    elif not port.isdigit():
        raise _Refusal(400, "bad_request", f"invalid port in {authority[:100]!r}")
    if "#" in rest:
        raise _Refusal(400, "bad_request", "fragment in the request target")
    path, _, query = rest.partition("?")
    return host.lower(), path, query


def _json(status: int, refused: str, message: str) -> tuple[int, str, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": refused, "message": message}).encode()
    return status, _REASONS.get(status, "Error"), [("Content-Type", "application/json")], body


_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
            411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def _forward_headers(head: Headers, drop: set[str]) -> list[tuple[str, str]]:
    drop = drop | HOP_BY_HOP | head.connection_tokens()
    return [(k, v) for k, v in head.items if k.lower() not in drop and not k.lower().startswith("proxy-")]


class ConnectorGateway:
    """Per-execution connector endpoints over a set of connectors.

    on_request(entry, context) is awaited for every request a tool makes
    (forwarded or refused) before the answer is written back; `context` is
    whatever the caller passed to endpoint(). If it raises, the tool is
    answered 503 and the error logged."""

    def __init__(self, connectors: Mapping[str, Connector], on_request: OnRequest, *,
                 runtime_dir: Path | None = None) -> None:
        self.connectors = dict(connectors)
        self.on_request = on_request
        self.runtime_dir = runtime_dir  # where endpoint directories go (default: the temp dir)
        self._by_host = {name.lower(): c for name, c in self.connectors.items()}
        self._upstreams = {name: _upstream(name, c.base_url) for name, c in self.connectors.items()}
        self._ssl: ssl.SSLContext | None = None

    @asynccontextmanager
    async def endpoint(self, *, permitted: Sequence[str], context: Any,
                       headers: Sequence[tuple[str, str]] = ()) -> AsyncIterator[Path]:
        """A Unix socket for one execution, serving the connectors named in
        `permitted` (the tool's registry entry; others are refused). `headers`
        are set on every request forwarded upstream, replacing any the tool
        sent under those names (the execution's Idempotency-Key). On exit:
        no new connection is served, every open connection from the tool is
        aborted, requests already forwarded upstream still finish and are
        recorded (bounded by their connector's timeout), and the socket's
        directory is removed."""
        allowed = frozenset(n.lower() for n in permitted)
        # mkdtemp: a fresh directory, mode 0700, only this service's uid can
        # reach the socket by its host path. The socket itself is 0600: the
        # sandbox connects as its uid 65534, but that is a uid of the
        # sandbox's user namespace, which bubblewrap maps to this service's
        # own uid (root's or the unprivileged user's), and it reaches the
        # socket through a bind mount, not by walking this directory. So
        # neither 0666 on the socket nor 0711 on the directory is needed, and
        # either would let any other local user who reads the path (it is on
        # bubblewrap's command line, in /proc) use the connectors with their
        # credentials. (A backend that ran tools as a distinct host uid would
        # need a group or an ACL here, not 0666.)
        directory = Path(tempfile.mkdtemp(prefix="aecl-conn-", dir=self.runtime_dir))
        path = directory / SOCKET_NAME
        conns: dict[asyncio.Task, asyncio.StreamWriter] = {}
        closing = False

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if closing:
                writer.transport.abort()
                return
            task = asyncio.current_task()
            conns[task] = writer
            try:
                await self._handle(reader, writer, allowed, context, tuple(headers))
            except Exception:
                log.exception("connector endpoint %s: connection handler failed", path)
            finally:
                writer.close()  # graceful: what is still buffered goes out first
                try:
                    await writer.wait_closed()  # endpoint exit aborts a tool that does not read
                except (OSError, RuntimeError):
                    pass
                conns.pop(task, None)

        server = None
        try:
            if len(os.fsencode(path)) > _SUN_PATH_MAX:
                raise ConfigError(f"connector socket path {path} is too long for a Unix socket")
            server = await asyncio.start_unix_server(on_connect, path=str(path), limit=STREAM_LIMIT)
            os.chmod(path, 0o600)
            yield path
        finally:
            closing = True
            if server is not None:
                server.close()
            for writer in list(conns.values()):
                writer.transport.abort()  # the tool's side; reads in progress see EOF
            pending = set(conns)
            if pending:
                bound = max((c.timeout_s for c in self.connectors.values()), default=0) + RECORD_GRACE_S
                _, pending = await asyncio.wait(pending, timeout=bound)
                for t in pending:
                    log.error("connector endpoint %s: a request was still in flight %.0f s after the "
                              "execution ended: abandoned, it may be unrecorded", path, bound)
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            if server is not None:
                await server.wait_closed()
            shutil.rmtree(directory, ignore_errors=True)

    # -- one connection, one request -------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      allowed: frozenset[str], context: Any, set_headers: tuple[tuple[str, str], ...] = ()
                      ) -> None:
        started = time.monotonic()
        what = {"connector": "", "method": "", "path": ""}
        bytes_in = 0
        upstream_status: int | None = None
        refused: str | None = None
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await read_request_head(reader)
            except TimeoutError:
                raise _Refusal(408, "bad_request", f"no complete request head within {REQUEST_TIMEOUT_S:g} s")
            except HttpError as e:
                raise _Refusal(e.status, "bad_request", e.message) from None
            if head is None:
                return  # closed before sending anything: no request
            started = time.monotonic()
            what["method"] = head.method
            connector, path, query, length = self._check(head, allowed, what)
            expect = (head.headers.get("expect") or "").lower()
            if expect == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif expect:
                raise _Refusal(400, "bad_request", f"unsupported Expect: {expect[:40]}")
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    body = await read_body(reader, length)
            except TimeoutError:
                raise _Refusal(408, "bad_request", f"request body not received within {REQUEST_TIMEOUT_S:g} s")
            except HttpError as e:
                raise _Refusal(e.status, "bad_request", e.message) from None
            bytes_in = len(body)
            response = await self._forward(connector, head, path, query, body, set_headers)
            upstream_status = response[0]
        except _Refusal as r:
            refused, upstream_status = r.refused, r.upstream_status or upstream_status
            response = _json(r.status, r.refused, r.message)
        except Exception as e:  # a bug here: logged, recorded, answered
            log.exception("connector proxy: unexpected error")
            refused = "internal_error"
            response = _json(500, "internal_error", f"internal error in the connector proxy ({type(e).__name__})")
        status, reason, headers, body_out = response
        entry = ProxiedRequest(
            connector=what["connector"], method=what["method"], path=what["path"], status=status,
            bytes_in=bytes_in, bytes_out=len(body_out),
            duration_ms=round((time.monotonic() - started) * 1000, 3),
            refused=refused, upstream_status=upstream_status,
        )
        try:
            await self.on_request(entry, context)
        except Exception:
            log.exception("connector %s: recording %s %s (status %s) failed: answered 503",
                          entry.connector or "?", entry.method, entry.path, entry.status)
            status, reason, headers, body_out = _json(503, "record_failed",
                                                      "the request could not be recorded")
        await self._answer(reader, writer, status, reason, headers, body_out)

    def _check(self, head: RequestHead, allowed: frozenset[str], what: dict[str, str]
               ) -> tuple[Connector, str, str, int]:
        if head.method == "CONNECT":
            what["connector"] = head.target.rpartition(":")[0].lower() or head.target.lower()
            raise _Refusal(405, "not_allowed", "CONNECT is not served: no tunnels, the connector must see the "
                                               "request (use http://<connector>/path; it adds TLS upstream)")
        what["path"] = head.target.partition("?")[0]
        host, path, query = _split_target(head)
        what["connector"], what["path"] = host, path
        try:
            length = head.content_length()
        except HttpError as e:
            raise _Refusal(e.status, "bad_request", e.message) from None
        connector = self._by_host.get(host)
        if connector is None:
            raise _Refusal(403, "unknown_connector", f"{host!r} is not a connector")
        what["connector"] = connector.name
        if connector.name.lower() not in allowed:
            raise _Refusal(403, "not_permitted_for_tool", f"this tool may not use connector {connector.name!r}")
        problem = path_problem(path) or _query_problem(query)
        if problem is not None:
            raise _Refusal(403, "not_allowed", problem)
        if not connector.allows(head.method, path):
            raise _Refusal(403, "not_allowed", f"{head.method} {path} is outside the allow list of "
                                               f"connector {connector.name!r}")
        if length > connector.max_body_bytes:
            raise _Refusal(413, "body_too_large", f"request body of {length} bytes is larger than connector "
                                                  f"{connector.name!r}'s max_body_bytes ({connector.max_body_bytes})")
        return connector, path, query, length

    async def _forward(self, connector: Connector, head: RequestHead, path: str, query: str, body: bytes,
                       set_headers: tuple[tuple[str, str], ...] = ()
                       ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        up = self._upstreams[connector.name]
        drop = {"host", "content-length", "expect", *(k.lower() for k, _ in set_headers)}
        if connector.header:
            drop.add(connector.header.lower())  # the tool cannot choose the credential
        headers = [("Host", up.netloc), *_forward_headers(head.headers, drop), *set_headers]
        credential = connector.credential_value()
        if credential is not None:
            headers.append((connector.header, credential))
        if body or head.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close"))
        target = up.base_path + path + (f"?{query}" if query else "")
        wire = (f"{head.method} {target} HTTP/1.1\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1") + body
        writer = None
        try:
            async with asyncio.timeout(connector.timeout_s):
                reader, writer = await asyncio.open_connection(
                    up.host, up.port, ssl=self._tls() if up.tls else None,
                    server_hostname=up.host if up.tls else None, limit=STREAM_LIMIT)
                writer.write(wire)
                await writer.drain()
                resp = await read_response(reader, method=head.method, max_body=MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise _Refusal(502, "upstream_error", f"connector {connector.name!r}: no response from upstream "
                                                  f"within {connector.timeout_s:g} s") from None
        except HttpError as e:
            raise _Refusal(502, "upstream_error", f"connector {connector.name!r}: {e.message}") from None
        except (OSError, ssl.SSLError) as e:
            raise _Refusal(502, "upstream_error", f"connector {connector.name!r}: upstream unreachable "
                                                  f"({type(e).__name__}: {e.strerror or e})") from None
        finally:
            if writer is not None:
                writer.transport.abort()
        out = _forward_headers(resp.headers, {"content-length"})
        body_out = resp.body
        if connector.secret and _leaks(connector.secret, out, body_out):
            # The upstream echoed the credential (a debugging endpoint, an
            # error page): it never reaches the sandbox.
            log.warning("connector %s: upstream response to %s %s held the credential: redacted",
                        connector.name, head.method, path)
            secret = connector.secret
            out = [(k, v.replace(secret, "[redacted]")) for k, v in out]
            body_out = body_out.replace(secret.encode(), b"[redacted]")
        if head.method == "HEAD" or resp.status in (204, 304):
            # No body; a HEAD's Content-Length describes the GET's.
            out += [("Content-Length", v) for v in resp.headers.get_all("content-length")[:1]]
        else:
            out.append(("Content-Length", str(len(body_out))))
        return resp.status, resp.reason, out, body_out

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                      reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        if writer.transport.is_closing():
            return  # the execution ended: nobody to answer
        names = {k.lower() for k, _ in headers}
        extra = [] if "content-length" in names or status in (204, 304) else [("Content-Length", str(len(body)))]
        head = (f"HTTP/1.1 {status} {reason}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in [*headers, *extra, ("Connection", "close")]) + "\r\n")
        try:
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            writer.write_eof()
            # Read and drop what the tool still sends (a body we refused, a
            # second request) until it closes, for a moment: closing with
            # unread data could reset the connection before it has read the
            # answer.
            async with asyncio.timeout(LINGER_S):
                while await reader.read(64 << 10):
                    pass
        except (OSError, TimeoutError, RuntimeError):
            pass  # the tool went away, or lingered too long


def _leaks(secret: str, headers: list[tuple[str, str]], body: bytes) -> bool:
    return secret.encode() in body or any(secret in v for _, v in headers)
