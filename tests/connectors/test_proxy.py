"""The host-side connector proxy over a real Unix socket, against a real HTTP
upstream on loopback: what is forwarded (with the connector's credential,
never the tool's), what is refused (and how it is recorded), and the
endpoint's lifetime."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import subprocess
import sys

import pytest

from enforcer.config import ConnectorConfig
from enforcer.connectors import load_connectors
from enforcer.connectors.proxy import path_problem
from enforcer.errors import ConfigError
from tests.conftest import free_port
from tests.connectors import (
    Recorder,
    ask,
    gateway,
    new_secret,
    payments_connectors,
    secret_file,
)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def connectors(upstream, secret, tmp_path):
    return payments_connectors(upstream.url, secret_file(tmp_path, secret))


def through(connectors, raws: list[bytes], *, permitted=("payments",), recorder=None, context="exec-1"):
    """Send each raw request on its own connection to one endpoint; return
    the answers and the recorder."""
    recorder = recorder if recorder is not None else Recorder()

    async def main():
        async with gateway(connectors, recorder).endpoint(permitted=list(permitted), context=context) as sock:
            return [await ask(sock, raw) for raw in raws]

    return asyncio.run(main()), recorder


def post(path: str, body: bytes, host: str = "payments", extra: str = "") -> bytes:
    return (f"POST http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def get(path: str, host: str = "payments", method: str = "GET") -> bytes:
    return f"{method} http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# -- forwarded ---------------------------------------------------------------


def test_an_allowed_post_is_forwarded_with_the_secret_and_the_tools_authorization_replaced(
        connectors, upstream, secret):
    body = json.dumps({"vendor": "V-221", "amount": 100000, "currency": "EUR"}).encode()
    (answer,), rec = through(connectors, [post(
        "/transfers?dry=1", body,
        extra="Authorization: Bearer forged-by-the-tool\r\nauthorization: Basic also-forged\r\n"
              "Proxy-Authorization: Basic x\r\nProxy-Foo: y\r\nX-Request-Id: r-1\r\n"
              "Connection: keep-alive, X-Hop\r\nX-Hop: dropped\r\nKeep-Alive: 5\r\n")])
    assert answer.status == 201, answer.raw
    assert answer.header("Connection") == ["close"]
    assert answer.header("X-Upstream") == ["yes"]
    (seen,) = upstream.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/transfers?dry=1", body)
    # The connector's credential, exactly once; none of the tool's.
    assert seen.header("Authorization") == [f"Bearer {secret}"]
    assert seen.header("Host") == [f"127.0.0.1:{upstream.port}"]
    assert seen.header("X-Request-Id") == ["r-1"]
    for hop in ("Proxy-Authorization", "Proxy-Foo", "X-Hop", "Keep-Alive"):
        assert seen.header(hop) == [], hop
    assert seen.header("Connection") == ["close"]
    # The upstream echoed the headers it got: the tool sees the credential redacted.
    assert secret.encode() not in answer.raw
    echoed = {k.lower(): v for k, v in answer.json()["headers"]}
    assert echoed["authorization"] == "Bearer [redacted]"
    entry = rec.only
    assert rec.entries[0][1] == "exec-1"
    assert (entry.connector, entry.method, entry.path, entry.status, entry.upstream_status, entry.refused) == \
        ("payments", "POST", "/transfers", 201, 201, None)
    assert entry.bytes_in == len(body) and entry.bytes_out == len(answer.body) and entry.duration_ms >= 0


def test_origin_form_with_a_host_header_and_a_sub_path_are_forwarded(connectors, upstream):
    raw = b"POST /transfers/t-1/reverse HTTP/1.1\r\nHost: PAYMENTS:80\r\nContent-Length: 2\r\n\r\n{}"
    (answer,), rec = through(connectors, [raw])
    assert answer.status == 201, answer.raw
    assert [s.path for s in upstream.seen] == ["/transfers/t-1/reverse"]
    assert rec.only.path == "/transfers/t-1/reverse" and rec.only.refused is None


def test_a_chunked_upstream_answer_reaches_the_tool_with_a_content_length(tmp_path, upstream, secret):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, secret),
                                allow=[{"methods": ["GET"], "path_prefix": "/chunked"}])
    (answer,), rec = through(conns, [get("/chunked")])
    assert answer.status == 200
    assert answer.header("Transfer-Encoding") == []
    assert answer.header("Content-Length") == [str(len(answer.body))]
    assert answer.json()["path"] == "/chunked"
    assert rec.only.bytes_out == len(answer.body)


def test_a_base_url_path_prefixes_the_upstream_path(tmp_path, upstream, secret):
    conns = payments_connectors(upstream.url + "/api/v1/", secret_file(tmp_path, secret))
    (answer,), _ = through(conns, [get("/accounts/A-1")])
    assert answer.status == 200
    assert [s.path for s in upstream.seen] == ["/api/v1/accounts/A-1"]


# -- refused -----------------------------------------------------------------


def test_a_path_or_method_outside_the_allow_list_is_refused_with_403_and_recorded(connectors, upstream):
    answers, rec = through(connectors, [
        get("/admin"),
        get("/transfers"),                  # GET is not allowed there, only POST
        post("/transfersX", b"{}"),         # not on a segment boundary
        post("/transfer", b"{}"),
        get("/accounts", method="DELETE"),
    ])
    assert [a.status for a in answers] == [403] * 5
    assert all(a.json()["error"] == "not_allowed" for a in answers)
    assert upstream.seen == []
    assert [(e.method, e.path, e.status, e.refused, e.upstream_status) for e, _ in rec.entries] == [
        ("GET", "/admin", 403, "not_allowed", None),
        ("GET", "/transfers", 403, "not_allowed", None),
        ("POST", "/transfersX", 403, "not_allowed", None),
        ("POST", "/transfer", 403, "not_allowed", None),
        ("DELETE", "/accounts", 403, "not_allowed", None),
    ]


def test_a_host_that_is_no_connector_is_refused(connectors, upstream):
    (a, b), rec = through(connectors, [
        get("/transfers", host="evil.example"),
        get("/accounts", host=f"127.0.0.1:{upstream.port}"),  # the upstream's real address
    ])
    assert (a.status, a.json()["error"]) == (403, "unknown_connector")
    assert (b.status, b.json()["error"]) == (403, "unknown_connector")
    assert upstream.seen == []
    assert [(e.connector, e.refused) for e, _ in rec.entries] == [
        ("evil.example", "unknown_connector"), ("127.0.0.1", "unknown_connector")]


def test_a_connector_the_tool_may_not_use_is_refused(connectors, upstream):
    (answer,), rec = through(connectors, [post("/transfers", b"{}")], permitted=["records"])
    assert (answer.status, answer.json()["error"]) == (403, "not_permitted_for_tool")
    assert upstream.seen == []
    assert (rec.only.connector, rec.only.refused) == ("payments", "not_permitted_for_tool")


TRAVERSALS = [
    "/transfers/../admin",
    "/transfers/./x",
    "/transfers/%2e%2e/admin",
    "/transfers/%2E%2E/admin",
    "/transfers%2fadmin",
    "/transfers%2F..%2Fadmin",
    "/transfers/.%2e/admin",
    "/transfers/%252e%252e/admin",   # double encoding
    "/transfers/..;/admin",          # servers that strip ;params
    "/transfers//admin",
    "/transfers/a%5c..%5cadmin",
    "/transfers/a\\..\\admin",
    "/transfers/%00",
    "/transfers/%zz",
]


def test_traversal_and_encoded_separators_are_refused(connectors, upstream):
    answers, rec = through(connectors, [post(p, b"{}") for p in TRAVERSALS])
    assert [a.status for a in answers] == [403] * len(TRAVERSALS), [a.raw for a in answers]
    assert [e.refused for e, _ in rec.entries] == ["not_allowed"] * len(TRAVERSALS)
    assert [e.path for e, _ in rec.entries] == TRAVERSALS
    assert upstream.seen == []


def test_path_rules():
    for ok in ("/transfers", "/transfers/", "/transfers/t-1/reverse", "/a;b=c", "/x%41y", "/a:b@c"):
        assert path_problem(ok) is None, ok
    for bad in TRAVERSALS + ["transfers", "/a b", "/ä"]:
        assert path_problem(bad) is not None, bad


def test_an_oversize_body_is_refused_before_it_is_read(connectors, upstream):
    big = 4097  # max_body_bytes is 4096
    head = (f"POST http://payments/transfers HTTP/1.1\r\nHost: payments\r\n"
            f"Content-Length: {big}\r\n\r\n").encode()
    answers, rec = through(connectors, [head, head + b"x" * 1000])
    assert [(a.status, a.json()["error"]) for a in answers] == [(413, "body_too_large")] * 2
    assert upstream.seen == []
    assert [(e.refused, e.bytes_in) for e, _ in rec.entries] == [("body_too_large", 0)] * 2


def test_a_body_at_the_limit_is_forwarded(connectors, upstream):
    (answer,), rec = through(connectors, [post("/transfers", b"x" * 4096)])
    assert answer.status == 201
    assert len(upstream.seen[0].body) == 4096 and rec.only.bytes_in == 4096


def test_connect_and_transfer_encoding_are_refused(connectors, upstream):
    answers, rec = through(connectors, [
        b"CONNECT payments:443 HTTP/1.1\r\nHost: payments:443\r\n\r\n",
        (b"POST http://payments/transfers HTTP/1.1\r\nHost: payments\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"2\r\n{}\r\n0\r\n\r\n"),
        (b"POST http://payments/transfers HTTP/1.1\r\nHost: payments\r\nContent-Length: 2\r\n"
         b"Content-Length: 3\r\n\r\n{}"),
    ])
    assert [a.status for a in answers] == [405, 411, 400]
    assert [(e.method, e.connector, e.refused) for e, _ in rec.entries] == [
        ("CONNECT", "payments", "not_allowed"), ("POST", "payments", "bad_request"),
        ("POST", "payments", "bad_request")]
    assert upstream.seen == []


def test_malformed_and_oversized_heads_are_refused_as_bad_requests(connectors, upstream):
    answers, rec = through(connectors, [
        b"GET http://payments/accounts\r\n\r\n",                               # no version
        b"GET http://payments/accounts HTTP/1.1\nHost: payments\n\n",          # bare LF
        b"GET http://payments/accounts HTTP/1.1\r\nHost: payments\r\n folded\r\n\r\n",
        b"GET http://payments/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",          # request line > 8 KiB
        b"GET http://payments/accounts HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
        b"GET http://payments/accounts HTTP/1.1\r\nX-Big: " + b"v" * 33000 + b"\r\n\r\n",
        b"GET https://payments/accounts HTTP/1.1\r\n\r\n",
        b"GET /accounts HTTP/1.1\r\n\r\n",                                     # origin-form, no Host
        b"GET http://user@payments/accounts HTTP/1.1\r\n\r\n",
    ])
    assert [a.status for a in answers] == [400, 400, 400, 414, 431, 431, 400, 400, 400]
    assert all(a.json()["error"] == "bad_request" for a in answers)
    assert [e.refused for e, _ in rec.entries] == ["bad_request"] * 9
    assert upstream.seen == []


def test_a_connection_closed_without_a_request_is_not_recorded(connectors):
    async def main():
        rec = Recorder()
        async with gateway(connectors, rec).endpoint(permitted=["payments"], context=None) as sock:
            _, writer = await asyncio.open_unix_connection(str(sock))
            writer.close()
            await writer.wait_closed()
            ok = await ask(sock, get("/accounts"))
        return rec, ok

    rec, ok = asyncio.run(main())
    assert ok.status == 200
    assert [e.path for e, _ in rec.entries] == ["/accounts"]


def test_an_upstream_that_is_down_gives_502(tmp_path, secret):
    conns = payments_connectors(f"http://127.0.0.1:{free_port()}", secret_file(tmp_path, secret))
    (answer,), rec = through(conns, [post("/transfers", b"{}")])
    assert (answer.status, answer.json()["error"]) == (502, "upstream_error")
    assert (rec.only.status, rec.only.refused, rec.only.upstream_status) == (502, "upstream_error", None)


def test_an_upstream_that_never_answers_gives_502(tmp_path, secret):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the kernel), never answers
    try:
        conns = payments_connectors(f"http://127.0.0.1:{silent.getsockname()[1]}",
                                    secret_file(tmp_path, secret), timeout_s=0.3)
        (answer,), rec = through(conns, [post("/transfers", b"{}")])
    finally:
        silent.close()
    assert (answer.status, answer.json()["error"]) == (502, "upstream_error")
    assert "no response from upstream" in answer.json()["message"]
    assert rec.only.refused == "upstream_error"


def test_a_failing_record_gives_503_and_is_logged(connectors, upstream, caplog):
    caplog.set_level(logging.ERROR, logger="enforcer.connectors.proxy")
    (answer,), _ = through(connectors, [post("/transfers", b"{}")], recorder=Recorder(fail=True))
    assert answer.status == 503
    assert len(upstream.seen) == 1  # forwarded, then the record failed: the tool never sees the answer
    assert b"X-Upstream" not in answer.raw
    assert any("recording POST /transfers" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_record_is_written_before_the_tool_sees_the_answer(connectors, upstream):
    order: list[str] = []

    class Slow(Recorder):
        async def __call__(self, entry, context):
            await asyncio.sleep(0.05)
            order.append("recorded")
            await super().__call__(entry, context)

    async def main():
        async with gateway(connectors, Slow()).endpoint(permitted=["payments"], context=None) as sock:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(get("/accounts"))
            first = await reader.read(1)  # the first byte of the answer
            order.append("answered")
            writer.close()
            return first

    assert asyncio.run(main()) == b"H"
    assert order == ["recorded", "answered"]


# -- the endpoint ----------------------------------------------------------------


def test_endpoint_socket_is_private_and_removed_on_exit(connectors):
    async def main():
        async with gateway(connectors, Recorder()).endpoint(permitted=["payments"], context=None) as sock:
            st, dst = os.stat(sock), os.stat(sock.parent)
            return sock, st, dst

    sock, st, dst = asyncio.run(main())
    assert sock.name == "connector.sock" and stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(dst.st_mode) == 0o700
    assert not sock.parent.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another host user")
def test_another_host_user_cannot_connect_to_the_endpoint(connectors):
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1]); print('connected')\n"
             "except OSError as e:\n    print(type(e).__name__)\n")

    async def main():
        async with gateway(connectors, Recorder()).endpoint(permitted=["payments"], context=None) as sock:
            proc = await asyncio.create_subprocess_exec(
                "/usr/bin/setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                "/usr/bin/python3", "-I", "-c", probe, str(sock), stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return out.decode().strip()

    assert asyncio.run(main()) == "PermissionError"


def test_exit_aborts_the_tools_connections_but_records_a_request_already_forwarded(connectors, upstream):
    rec = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        async with gateway(connectors, rec).endpoint(permitted=["payments"], context="exec-9") as sock:
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(get("/accounts/hold/1"))
            idle_r, idle_w = await asyncio.open_unix_connection(str(sock))  # sends nothing
            assert await loop.run_in_executor(None, upstream.arrived.wait, 30), "the request never reached upstream"
            # Runs at the loop's next turn, which comes only once the exit below has
            # aborted the tool's connections (nothing in between awaits).
            loop.call_soon(upstream.release.set)
        # Left the endpoint while the upstream was still answering.
        tool_got = await reader.read()
        idle_got = await idle_r.read()
        writer.close()
        idle_w.close()
        return tool_got, idle_got

    tool_got, idle_got = asyncio.run(main())
    assert tool_got == b"" and idle_got == b""  # aborted: nobody left to answer
    assert [(e.path, e.status, e.refused) for e, _ in rec.entries] == [("/accounts/hold/1", 200, None)]
    assert rec.entries[0][1] == "exec-9"


def test_two_endpoints_are_independent(connectors, upstream):
    rec = Recorder()

    async def main():
        gw = gateway(connectors, rec)
        async with gw.endpoint(permitted=["payments"], context="a") as a, \
                gw.endpoint(permitted=[], context="b") as b:
            assert a != b
            return await ask(a, get("/accounts")), await ask(b, get("/accounts"))

    ra, rb = asyncio.run(main())
    assert (ra.status, rb.status) == (200, 403)
    assert [(ctx, e.refused) for e, ctx in rec.entries] == [("a", None), ("b", "not_permitted_for_tool")]


# -- loading ---------------------------------------------------------------------


def _cfg(**credential) -> dict:
    return {"payments": ConnectorConfig.model_validate({
        "base_url": "http://127.0.0.1:1", "credential": credential,
        "allow": [{"methods": ["GET"], "path_prefix": "/"}], "scope": "payments:read"})}


def test_a_credential_file_readable_by_others_is_refused(tmp_path, secret):
    for mode in (0o644, 0o640, 0o604):
        path = secret_file(tmp_path, secret, mode)
        with pytest.raises(ConfigError, match="0600 or stricter"):
            load_connectors(_cfg(file=str(path)))
    path = secret_file(tmp_path, secret, 0o400)
    assert load_connectors(_cfg(file=str(path)))["payments"].secret == secret


def test_credentials_from_the_environment(monkeypatch, secret):
    monkeypatch.delenv("AECL_TEST_PAYMENTS_KEY", raising=False)
    with pytest.raises(ConfigError, match="AECL_TEST_PAYMENTS_KEY"):
        load_connectors(_cfg(env="AECL_TEST_PAYMENTS_KEY"))
    monkeypatch.setenv("AECL_TEST_PAYMENTS_KEY", "")
    with pytest.raises(ConfigError, match="empty"):
        load_connectors(_cfg(env="AECL_TEST_PAYMENTS_KEY"))
    monkeypatch.setenv("AECL_TEST_PAYMENTS_KEY", secret)
    c = load_connectors(_cfg(env="AECL_TEST_PAYMENTS_KEY", header="X-Api-Key", scheme=""))["payments"]
    assert (c.header, c.secret, c.credential_value()) == ("X-Api-Key", secret, secret)
    assert secret not in repr(c) and secret not in str(c)


def test_a_missing_credential_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_connectors(_cfg(file=str(tmp_path / "nope.key")))


def test_a_custom_credential_header_replaces_the_tools_copy(tmp_path, upstream, secret, monkeypatch):
    monkeypatch.setenv("AECL_TEST_PAYMENTS_KEY", secret)
    conns = load_connectors({"payments": ConnectorConfig.model_validate({
        "base_url": upstream.url,
        "credential": {"env": "AECL_TEST_PAYMENTS_KEY", "header": "X-Api-Key", "scheme": ""},
        "allow": [{"methods": ["GET"], "path_prefix": "/accounts"}], "scope": "payments:read"})})
    raw = b"GET http://payments/accounts HTTP/1.1\r\nHost: payments\r\nx-api-key: mine\r\nAuthorization: t\r\n\r\n"
    (answer,), _ = through(conns, [raw])
    assert answer.status == 200
    (seen,) = upstream.seen
    assert seen.header("X-Api-Key") == [secret]
    assert seen.header("Authorization") == ["t"]  # not the credential header here: the tool's own


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
