"""The example world's tiny shared framework: routing, JSON in and out,
errors, input checks, SQLite (WAL), one log line per request, quiet shutdown.

Standard library only. Each service builds an `App`, adds routes and calls
`run(...)`, which parses `--port N --db PATH`, listens on 127.0.0.1, prints
`ready <port>` on stdout once listening and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY = 64 * 1024  # larger request bodies get 413
_DRAIN_LIMIT = 1024 * 1024  # read and drop an oversize body up to this, so the client sees the 413
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ID_HINT = "1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HTTPError(Exception):
    """An error answered as {"error": message, **extra} with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}
        self.headers = headers or {}


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Any  # http.client.HTTPMessage: case-insensitive .get()
    body: Any  # the parsed JSON object, or None for routes that take no body
    client: str = ""  # the client's IP address


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def log(line: str) -> None:
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()


# ---- input checks: each raises HTTPError(400) with a message naming the field


def check_fields(body: dict, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> None:
    allowed = (*required, *optional)
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise HTTPError(400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")
    missing = [k for k in required if k not in body]
    if missing:
        raise HTTPError(400, f"missing field(s): {', '.join(missing)}")


def want_str(value: Any, name: str, *, max_len: int = 200, min_len: int = 1, single_line: bool = True) -> str:
    if not isinstance(value, str):
        raise HTTPError(400, f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise HTTPError(400, f"{name} must be {min_len} to {max_len} characters long")
    if (_CONTROL.search(value) if single_line else "\x00" in value):
        raise HTTPError(400, f"{name} must not contain control characters")
    return value


def want_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise HTTPError(400, f"{name} must be {ID_HINT}")
    return value


def want_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPError(400, f"{name} must be an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise HTTPError(400, f"{name} must be between {minimum} and {maximum}")
    return value


IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
_KEY_HINT = "1 to 255 printable ASCII characters without spaces"


def header_idempotency_key(req: Request) -> str | None:
    """The request's Idempotency-Key header, checked; None without one."""
    key = req.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise HTTPError(400, f"Idempotency-Key must be {_KEY_HINT}")
    return key


def query_idempotency_key(req: Request) -> str | None:
    """?idempotency_key=K, checked; None when the query does not name one."""
    values = req.query.get("idempotency_key")
    if values is None:
        return None
    if len(values) != 1 or not IDEMPOTENCY_KEY_RE.fullmatch(values[0]):
        raise HTTPError(400, f"idempotency_key must be given once: {_KEY_HINT}")
    return values[0]


def snapshots_taken(db: "Database", column: str, value: str, key: str | None) -> list:
    """The snapshots of one record or service (`column` = value), oldest
    first; with `key`, only those the writes under that Idempotency-Key took
    (how a compensation finds what an interrupted write did)."""
    sql, params = f"SELECT * FROM snapshots WHERE {column} = ?", [value]
    if key is not None:
        sql, params = sql + " AND idempotency_key = ?", [*params, key]
    with db.read() as conn:
        return conn.execute(sql + " ORDER BY created_at, rowid", params).fetchall()


def want_object(value: Any, name: str, *, max_keys: int = 100) -> dict:
    if not isinstance(value, dict):
        raise HTTPError(400, f"{name} must be a JSON object")
    if len(value) > max_keys:
        raise HTTPError(400, f"{name} has more than {max_keys} keys")
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise HTTPError(400, "body is not UTF-8") from None
    except RecursionError:
        raise HTTPError(400, "body is nested too deeply") from None
    except ValueError as e:
        raise HTTPError(400, f"body is not valid JSON: {e}") from None


# ---- SQLite


class Database:
    """One SQLite file in WAL mode; a fresh connection per transaction."""

    def __init__(self, path: str | Path, schema: list[str], seed: Callable[[sqlite3.Connection], None] | None = None,
                 migrations: list[str] = ()):
        """schema is version 1; migrations[i] takes version i+1 to i+2 (a new
        database gets the schema, the seed, then every migration)."""
        self.path = str(path)
        latest = 1 + len(migrations)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: cannot use WAL (journal_mode is {mode})")
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:  # a new database: create and seed it, once
                for statement in schema:
                    conn.execute(statement)
                if seed:
                    seed(conn)
                version = 1
            elif version > latest:
                raise RuntimeError(f"{self.path}: schema version {version}, this service knows {latest}")
            for statement in migrations[version - 1:]:  # an older database: upgraded in place, in this transaction
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {latest}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def _transaction(self, begin: str):
        conn = self._connect()
        try:
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def write(self):
        """A write transaction; writers queue on the database lock."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self):
        return self._transaction("BEGIN")


# ---- test-only fault injection (loopback clients only)


@dataclass
class Fault:
    """The next `times` requests matching method and path_prefix misbehave:
    without commit, after delay_s they get `status` and nothing is done;
    with commit, the request is served (a write commits) and only the answer
    is delayed by delay_s, so a client that times out never learns it happened."""

    method: str  # "*" matches any
    path_prefix: str
    times: int = 1
    status: int = 503
    delay_s: float = 0.0
    commit: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and path.startswith(self.path_prefix)

    def view(self) -> dict:
        return {"method": self.method, "path_prefix": self.path_prefix, "times": self.times, "status": self.status,
                "delay_s": self.delay_s, "commit": self.commit}


MAX_FAULT_DELAY = 30.0
CONTROL_PREFIX = "/_control/"
_METHODS = ("*", "GET", "POST", "PUT", "PATCH", "DELETE")


def parse_fault(body: dict) -> Fault:
    check_fields(body, required=("path_prefix",), optional=("method", "times", "status", "delay_s", "commit"))
    method = body.get("method", "*")
    if method not in _METHODS:
        raise HTTPError(400, f"method must be one of {', '.join(_METHODS)}")
    prefix = want_str(body["path_prefix"], "path_prefix", max_len=200)
    if not prefix.startswith("/") or prefix.startswith(CONTROL_PREFIX):
        raise HTTPError(400, f"path_prefix must start with / and not with {CONTROL_PREFIX}")
    times = want_int(body.get("times", 1), "times", minimum=1, maximum=1000)
    status = want_int(body.get("status", 503), "status", minimum=400, maximum=599)
    delay = body.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_FAULT_DELAY:
        raise HTTPError(400, f"delay_s must be a number of seconds from 0 to {MAX_FAULT_DELAY:g}")
    commit = body.get("commit", False)
    if not isinstance(commit, bool):
        raise HTTPError(400, "commit must be true or false")
    if commit and not delay:
        raise HTTPError(400, "commit: true needs a delay_s (the answer is what is delayed)")
    if commit and "status" in body:
        raise HTTPError(400, "commit: true sends the real answer late; it takes no status")
    return Fault(method, prefix, times, status, float(delay), commit)


class Faults:
    """The armed faults of one service, in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.cleared = threading.Event()  # wakes delayed requests early on DELETE

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)
            self.cleared.clear()

    def clear(self) -> int:
        with self._lock:
            n, self._faults = len(self._faults), []
            self.cleared.set()
            return n

    def views(self) -> list[dict]:
        with self._lock:
            return [f.view() for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching this request, used up once."""
        if path.startswith(CONTROL_PREFIX):
            return None
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return Fault(**{**fault.view(), "times": 1})
        return None

    def wait(self, fault: Fault) -> None:
        if fault.delay_s:
            self.cleared.wait(fault.delay_s)


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def _add_control_routes(app: App) -> None:
    def loopback_only(req: Request) -> None:
        if not _is_loopback(req.client):
            raise HTTPError(403, "the fault control answers loopback clients only")

    @app.route("GET", "/_control/faults")
    def list_faults(req):
        loopback_only(req)
        return {"faults": app.faults.views()}

    @app.route("POST", "/_control/faults", body="required")
    def add_fault(req):
        loopback_only(req)
        fault = parse_fault(req.body)
        app.faults.add(fault)
        log(f"{now()} {app.name} fault armed: {dumps(fault.view())}")
        return Response(201, {"armed": fault.view(), "faults": app.faults.views()})

    @app.route("DELETE", "/_control/faults")
    def clear_faults(req):
        loopback_only(req)
        return {"cleared": app.faults.clear(), "faults": []}


# ---- routing and HTTP


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    fn: Callable[[Request], Any]
    body: str | None  # None: no body; "optional": a JSON object or nothing; "required"
    public: bool


class App:
    def __init__(self, name: str, db: Database):
        self.name = name
        self.db = db
        self.routes: list[Route] = []
        self.authorize: Callable[[Any], None] | None = None  # raises HTTPError(401) for non-public routes
        self.faults = Faults()  # test-only: POST/GET/DELETE /_control/faults (loopback; authorized like the rest)
        _add_control_routes(self)

    def route(self, method: str, path: str, *, body: str | None = None, public: bool = False):
        """Register fn for `method path`; `{name}` in path is one segment."""
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))

        def register(fn):
            self.routes.append(Route(method, re.compile(regex), fn, body, public))
            return fn

        return register

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            m = route.pattern.fullmatch(path)
            if m:
                if route.method == method:
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}
                allowed.append(route.method)
        if allowed:
            raise HTTPError(405, f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                            headers={"Allow": ", ".join(allowed)})
        raise HTTPError(404, f"no such endpoint: {method} {path}")


def _printable(text: str) -> str:
    return _CONTROL.sub("?", text)


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"aecl-world-{app.name}"
        timeout = 10  # seconds a silent client may hold a connection

        def version_string(self):
            return self.server_version

        def do_GET(self):
            self._handle()

        do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        def _handle(self):
            start = time.perf_counter()
            self._late: Fault | None = None
            try:
                resp = self._dispatch()
                if not isinstance(resp, Response):
                    resp = Response(200, resp)
            except HTTPError as e:
                resp = Response(e.status, e.body, e.headers)
            except Exception:  # noqa: BLE001 - any bug is a 500 with its traceback on stderr
                log(f"{app.name}: internal error on {self.command} {_printable(self.path)}\n{traceback.format_exc()}")
                resp = Response(500, {"error": "internal error"})
            if self._late is not None:  # an injected fault: what was done stays done, the answer comes late
                app.faults.wait(self._late)
            self._send(resp, start)

        def _read_body(self) -> bytes:
            if "Transfer-Encoding" in self.headers:
                self.close_connection = True
                raise HTTPError(411, "send the body with a Content-Length, not a Transfer-Encoding")
            length = self.headers.get("Content-Length")
            if length is None:
                return b""
            if not re.fullmatch(r"[0-9]{1,12}", length.strip()):
                self.close_connection = True
                raise HTTPError(400, "bad Content-Length")
            n = int(length)
            try:
                if n > MAX_BODY:
                    self.close_connection = True
                    if n <= _DRAIN_LIMIT:
                        self.rfile.read(n)
                    raise HTTPError(413, f"request body of {n} bytes exceeds the limit of {MAX_BODY} bytes")
                data = self.rfile.read(n)
            except OSError:  # the client went silent or away mid-body
                self.close_connection = True
                raise HTTPError(408, "timed out reading the request body") from None
            if len(data) != n:
                self.close_connection = True
                raise HTTPError(400, "request body shorter than its Content-Length")
            return data

        def _dispatch(self) -> Any:
            raw = self._read_body()
            url = urlsplit(self.path)
            route, params = app.match(self.command, url.path)
            if not route.public and app.authorize:
                app.authorize(self.headers)
            fault = app.faults.take(self.command, url.path)
            if fault is not None:
                log(f"{now()} {app.name} injected fault on {self.command} {_printable(url.path)}: {dumps(fault.view())}")
                if fault.commit:
                    self._late = fault  # served now, answered after the delay
                else:
                    app.faults.wait(fault)
                    raise HTTPError(fault.status, f"injected fault: {fault.status}", code="injected_fault")
            body = None
            if raw:
                if route.body is None:
                    raise HTTPError(400, f"{self.command} {url.path} takes no body")
                ctype = self.headers.get("Content-Type")
                if ctype is None or self.headers.get_content_type() != "application/json" \
                        or self.headers.get_content_charset("utf-8").lower() not in ("utf-8", "utf8"):
                    raise HTTPError(415, "send the body as Content-Type: application/json (UTF-8)")
                body = want_object(parse_json(raw), "body", max_keys=1000)
            elif route.body == "required":
                raise HTTPError(400, "this endpoint needs a JSON object body")
            elif route.body == "optional":
                body = {}
            query = parse_qs(url.query, keep_blank_values=True)
            req = Request(self.command, url.path, params, query, self.headers, body, self.client_address[0])
            return route.fn(req)

        def _send(self, resp: Response, start: float) -> None:
            data = (dumps(resp.body) + "\n").encode("utf-8")
            ms = (time.perf_counter() - start) * 1000
            method, path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
            log(f"{now()} {app.name} {self.client_address[0]} \"{_printable(method)} {_printable(urlsplit(path).path)}\" "
                f"{resp.status} {len(data)}B {ms:.1f}ms")
            try:
                self.send_response(resp.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                for key, value in resp.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def send_error(self, code, message=None, explain=None):
            # http.server's own errors (bad request line, unsupported method): JSON too
            self.close_connection = True
            self._send(Response(code, {"error": message or self.responses.get(code, ("error",))[0]}), time.perf_counter())

        def log_request(self, code="-", size="-"):
            pass  # _send logs each request once

        def log_message(self, format, *args):
            log(f"{now()} {app.name} {self.client_address[0]} {_printable(format % args)}")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True


def run(name: str, build: Callable[[argparse.Namespace], App],
        add_args: Callable[[argparse.ArgumentParser], None] | None = None, argv: list[str] | None = None) -> int:
    """Parse the command line, build the app, serve until SIGTERM/SIGINT; exit status."""
    parser = argparse.ArgumentParser(description=f"The example world's {name} service.")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--db", required=True, help="SQLite database file (created and seeded if new)")
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    try:
        app = build(args)
        server = _Server(("127.0.0.1", args.port), make_handler(app))
    except (OSError, RuntimeError, sqlite3.Error, ValueError) as e:
        log(f"{name}: cannot start: {e}")
        return 2
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    log(f"{now()} {name} listening on http://127.0.0.1:{port} (db {app.db.path})")
    try:
        print(f"ready {port}", flush=True)
    except BrokenPipeError:
        pass
    while not stop.wait(1):
        if not thread.is_alive():
            log(f"{name}: server loop ended unexpectedly")
            return 1
    server.shutdown()
    server.server_close()
    log(f"{now()} {name} stopped")
    return 0
