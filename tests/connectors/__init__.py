"""Shared helpers for the connector tests: a real HTTP upstream on loopback
(http.server in a thread) that records what it receives, a raw HTTP client
over the endpoint's Unix socket, and real connectors loaded from the
service's config model."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from enforcer.config import ConnectorConfig
from enforcer.connectors import (
    Connector,
    ConnectorGateway,
    ProxiedRequest,
    load_connectors,
)


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Upstream:
    """A real HTTP/1.1 server on 127.0.0.1:<free port>. Every request is
    recorded; the answer is 201 for POST, 200 otherwise, with a JSON body
    echoing the method, path and headers it received. Special paths:
    /chunked answers with a chunked body; a path with a /hold/ segment (the
    connector allows only its prefixes, e.g. /accounts/hold/1) waits for
    `release` before answering."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                upstream.seen.append(Seen(self.command, self.path, list(self.headers.items()), body))
                upstream.arrived.set()
                if "/hold/" in self.path:
                    upstream.release.wait(30)
                out = json.dumps({"method": self.command, "path": self.path,
                                  "headers": list(self.headers.items()),
                                  "body": body.decode(errors="replace")}).encode()
                self.send_response(201 if self.command == "POST" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Upstream", "yes")
                if self.path == "/chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(out), 7):
                        piece = out[i:i + 7]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def new_secret() -> str:
    return "pk_live_" + secrets.token_hex(24)


def secret_file(directory: Path, value: str, mode: int = 0o600) -> Path:
    path = directory / "payments.key"
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def payments_connectors(base_url: str, key_file: Path, **overrides) -> dict[str, Connector]:
    """The example's payments connector, through the real config model."""
    cfg = {
        "base_url": base_url,
        "credential": {"file": str(key_file), "header": "Authorization", "scheme": "Bearer"},
        "allow": [{"methods": ["POST"], "path_prefix": "/transfers"},
                  {"methods": ["GET", "HEAD"], "path_prefix": "/accounts"}],
        "scope": "payments:initiate",
        "timeout_s": 5,
        "max_body_bytes": 4096,
    }
    cfg.update(overrides)
    return load_connectors({"payments": ConnectorConfig.model_validate(cfg)})


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict:
        return json.loads(self.body)


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
    return Answer(status, headers, body, raw)


async def ask(sock: Path, raw: bytes) -> Answer:
    """Send `raw` bytes on a new connection to the endpoint, read until EOF."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    return parse_answer(data)


@dataclass
class Recorder:
    """on_request for a gateway: keeps every entry with its context."""

    entries: list[tuple[ProxiedRequest, object]] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, entry: ProxiedRequest, context: object) -> None:
        if self.fail:
            raise OSError("audit log unavailable")
        self.entries.append((entry, context))

    @property
    def only(self) -> ProxiedRequest:
        assert len(self.entries) == 1, self.entries
        return self.entries[0][0]


def gateway(connectors: dict[str, Connector], recorder: Recorder) -> ConnectorGateway:
    return ConnectorGateway(connectors, recorder)
