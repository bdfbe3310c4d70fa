"""What every service of the example world does: health, JSON errors, size
bound, strict JSON, WAL, one log line per request, quiet stop on a signal."""

from __future__ import annotations

import re
import signal
import sqlite3

import pytest

from tests.world.conftest import SCRIPTS, call, stop, write_key

# each service's main POST endpoint
WRITES = {"payments": "/transfers", "records": "/records", "config": "/deploy", "webhooks": "/events/e-1",
          "mail": "/send"}
MAX_BODY = 64 * 1024
# 1 + len(MIGRATIONS) of each service (the Idempotency-Key columns and tables of issue 15)
SCHEMA_VERSIONS = {"payments": 3, "records": 3, "config": 3, "webhooks": 4, "mail": 1}


@pytest.fixture(params=sorted(SCRIPTS))
def any_service(request, spawn, tmp_path):
    name = request.param
    args = ()
    if name == "payments":
        args = ("--api-key-file", str(tmp_path / "payments.key"))
        write_key(tmp_path / "payments.key")
    return spawn(name, args=args)


def test_health_is_200_ok_json(any_service):
    reply = call("GET", any_service.url + "/health")
    assert reply.status == 200
    assert reply.body == {"ok": True}
    assert reply.headers["Content-Type"].startswith("application/json")


def test_unknown_path_is_404_and_wrong_method_405_in_json(any_service):
    missing = call("GET", any_service.url + "/no/such/thing")
    assert missing.status == 404
    assert "no such endpoint" in missing.body["error"]
    wrong = call("PUT", any_service.url + "/health", raw=b"")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET"
    assert "PUT is not allowed on /health" in wrong.body["error"]


def test_oversize_body_is_413(any_service):
    body = b'{"x": "' + b"a" * MAX_BODY + b'"}'
    reply = call("POST", any_service.url + WRITES[any_service.name], raw=body)
    assert reply.status == 413
    assert str(MAX_BODY) in reply.body["error"]


def test_body_at_the_limit_is_read(any_service):
    # a body of exactly 64 KiB is accepted by the size check and then validated
    pad = MAX_BODY - len(b'{"x":""}')
    reply = call("POST", any_service.url + WRITES[any_service.name], raw=b'{"x":"' + b"a" * pad + b'"}')
    assert reply.status in (400, 401)  # an unknown field, or (payments) the key comes first
    assert reply.status != 413


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not valid JSON"),
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_malformed_json_is_400_with_a_message(spawn, raw, message):
    service = spawn("records")
    reply = call("POST", service.url + "/records", raw=raw)
    assert reply.status == 400
    assert message in reply.body["error"]


def test_body_must_be_declared_json(spawn):
    service = spawn("mail")
    body = b'{"to": "a@example.com", "subject": "s", "body": "b"}'
    reply = call("POST", service.url + "/send", raw=body, content_type="text/plain")
    assert reply.status == 415
    assert "application/json" in reply.body["error"]
    assert call("GET", service.url + "/outbox").body["messages"] == []


def test_a_body_where_none_is_taken_is_400(spawn):
    service = spawn("records")
    reply = call("DELETE", service.url + "/records/INV-1001", {"why": "because"})
    assert reply.status == 400
    assert "takes no body" in reply.body["error"]
    assert call("GET", service.url + "/records/INV-1001").status == 200


def test_database_is_sqlite_in_wal_mode(any_service):
    assert call("GET", any_service.url + "/health").status == 200
    with sqlite3.connect(any_service.db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSIONS[any_service.name]


def test_one_log_line_per_request_on_stderr(any_service):
    call("GET", any_service.url + "/health")
    call("GET", any_service.url + "/nowhere")
    call("POST", any_service.url + WRITES[any_service.name], raw=b"{bad")
    lines = [l for l in any_service.log_text().splitlines() if re.search(r'"[A-Z]+ /', l)]
    assert len(lines) == 3
    assert '"GET /health" 200' in lines[0]
    assert '"GET /nowhere" 404' in lines[1]
    assert f'"POST {WRITES[any_service.name]}" ' in lines[2]
    assert all(l.split()[1] == any_service.name for l in lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_quietly_with_status_0(any_service, sig):
    assert call("GET", any_service.url + "/health").status == 200
    assert stop(any_service.proc, sig) == 0
    log = any_service.log_text()
    assert "Traceback" not in log
    assert log.rstrip().endswith(f"{any_service.name} stopped")
    with pytest.raises(OSError):
        call("GET", any_service.url + "/health")


def test_bad_command_line_exits_nonzero_without_ready(tmp_path):
    import subprocess
    import sys

    from tests.world.conftest import WORLD

    missing_key = subprocess.run([sys.executable, str(WORLD / "payments.py"), "--port", "0", "--db",
                                  str(tmp_path / "p.db"), "--api-key-file", str(tmp_path / "absent.key")],
                                 check=False, capture_output=True, text=True, timeout=60)
    assert missing_key.returncode == 2
    assert missing_key.stdout == ""
    assert "cannot read the API key file" in missing_key.stderr
    no_db = subprocess.run([sys.executable, str(WORLD / "mail.py"), "--port", "0"],
                           check=False, capture_output=True, text=True, timeout=60)
    assert no_db.returncode == 2
    assert "--db" in no_db.stderr


def _raw_exchange(url: str, request: bytes) -> bytes:
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"GARBAGE\r\n\r\n", None, b"Bad request syntax"),
    (b"GET /health HTTP/9.9\r\n\r\n", None, b"Invalid HTTP version"),  # answered as HTTP/0.9: no status line
    (b"POST /send HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", b"400", b"bad Content-Length"),
    (b"POST /send HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n",
     b"411", b"Content-Length"),
])
def test_malformed_http_gets_a_json_error_and_the_service_carries_on(spawn, request_bytes, status, message):
    service = spawn("mail")
    answer = _raw_exchange(service.url, request_bytes)
    if status:
        assert answer.startswith(b"HTTP/1.0 " + status)
    assert b'{"error":' in answer and message in answer
    assert call("GET", service.url + "/health").status == 200
    assert "Traceback" not in service.log_text()
