"""The example world's services as real processes, and a small HTTP client."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORLD = REPO / "examples" / "world"
SCRIPTS = {"payments": "payments.py", "records": "records.py", "config": "config_service.py",
           "webhooks": "webhooks.py", "mail": "mail.py"}
GUARD = 30  # seconds before a hung process fails the test; a guard, not an assertion

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any


def call(method: str, url: str, body: Any = None, *, headers: dict | None = None, raw: bytes | None = None,
         content_type: str | None = "application/json") -> Reply:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and content_type is not None:
        req.add_header("Content-Type", content_type)
    try:
        with _opener.open(req, timeout=GUARD) as r:
            return Reply(r.status, r.headers, json.loads(r.read()))
    except urllib.error.HTTPError as e:
        with e:
            return Reply(e.code, e.headers, json.loads(e.read()))


def read_line(proc: subprocess.Popen) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(GUARD)
    return box[0] if box else ""


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


def write_key(path: Path) -> str:
    key = secrets.token_hex(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    url: str
    db: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def spawn(tmp_path):
    """spawn(name, db=None, args=()) -> a running Service; all stopped at the end."""
    procs: list[subprocess.Popen] = []

    def start(name: str, *, db: Path | None = None, args: tuple[str, ...] = ()) -> Service:
        db = db or tmp_path / f"{name}.db"
        log = tmp_path / f"{name}.{len(procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, str(WORLD / SCRIPTS[name]), "--port", "0", "--db", str(db), *args],
                                    stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        procs.append(proc)
        line = read_line(proc)
        assert line.startswith("ready "), f"{name} did not start: {line!r}\n{log.read_text()}"
        return Service(name, proc, f"http://127.0.0.1:{int(line.split()[1])}", db, log)

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)


@dataclass
class Payments:
    service: Service
    key: str
    key_file: Path

    @property
    def url(self) -> str:
        return self.service.url

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None, headers: dict | None = None,
             **kw) -> Reply:
        h = {"Authorization": f"Bearer {self.key if key is None else key}", **(headers or {})}
        return call(method, self.url + path, body, headers=h, **kw)

    def balance(self, account_id: str) -> int:
        reply = self.call("GET", f"/accounts/{account_id}")
        assert reply.status == 200, reply.body
        return reply.body["balance"]


@pytest.fixture
def key_file(tmp_path) -> tuple[str, Path]:
    path = tmp_path / "payments.key"
    return write_key(path), path


@pytest.fixture
def payments(spawn, key_file) -> Payments:
    key, path = key_file
    return Payments(spawn("payments", args=("--api-key-file", str(path))), key, path)
