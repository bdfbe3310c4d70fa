"""The console's security properties against a real `aecl serve` with the
console on a free port (httpx, no browser)."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.console.links import approval_links
from enforcer.console.security import CSP
from tests.console.conftest import PAYLOAD, ConsoleService, csrf_of, hidden, login

PAGES = ["/", "/attention", "/approvals/apr_00000000000000000000000000000000", "/tasks/tsk_x"]
STREAMS = ["/events", "/fragments/queue", "/api/approvals/apr_00000000000000000000000000000000",
           "/approvals/apr_00000000000000000000000000000000/events"]


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_session_redirects_to_login_and_back(console: ConsoleService, path: str) -> None:
    r = console.client().get(path)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?" + httpx.QueryParams({"next": path}).__str__()


@pytest.mark.parametrize("path", STREAMS)
def test_a_stream_or_fragment_without_a_session_is_401(console: ConsoleService, path: str) -> None:
    r = console.client().get(path)
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


def test_a_forged_session_cookie_is_no_session(console: ConsoleService) -> None:
    c = console.client()
    c.cookies.set("aecl_session", "made-up-session-id")
    assert c.get("/").status_code == 303


@pytest.mark.parametrize("principal", ["finance_agent_v2", "admin"])
def test_agent_and_admin_keys_are_refused_at_login_and_logged(console: ConsoleService, principal: str) -> None:
    c = console.client()
    r = login(c, console.svc.key(principal))
    assert r.status_code == 403 and "aecl_session" not in r.headers.get("set-cookie", "")
    assert c.get("/").status_code == 303
    refused = [x for x in console.records("auth_refused") if x["rpc"] == "ConsoleLogin"]
    assert refused and refused[-1]["refusal"] == "wrong_role"
    assert refused[-1]["principal"]["id"] == principal
    assert console.svc.key(principal) not in "\n".join(console.svc.log_lines())


def test_a_wrong_key_is_refused_and_logged_without_the_secret(console: ConsoleService) -> None:
    key = console.svc.key("approver")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    r = login(console.client(), wrong)
    assert r.status_code == 401 and "aecl_session" not in r.headers.get("set-cookie", "")
    assert wrong not in "\n".join(console.svc.log_lines())
    assert [x for x in console.records("auth_refused") if x["rpc"] == "ConsoleLogin"][-1]["status"] == \
        "UNAUTHENTICATED"


def test_login_without_the_login_csrf_token_is_403(console: ConsoleService) -> None:
    c = console.client()
    c.get("/login")
    r = c.post("/login", data={"api_key": console.svc.key("approver"), "csrf_token": "nope", "next": "/"})
    assert r.status_code == 403 and "aecl_session" not in r.headers.get("set-cookie", "")
    # a token from another browser's login cookie does not match this one's
    other = console.client()
    token = hidden(other.get("/login").text, "csrf_token")
    r = c.post("/login", data={"api_key": console.svc.key("approver"), "csrf_token": token, "next": "/"})
    assert r.status_code == 403


def test_session_cookie_flags_and_logout(console: ConsoleService) -> None:
    c = console.client()
    r = login(c, console.svc.key("approver"))
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("aecl_session="))
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plaintext on loopback: a Secure cookie would never be sent back
    assert c.get("/").status_code == 200
    csrf = csrf_of(c)
    assert c.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    assert c.get("/").status_code == 200  # still logged in
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert c.get("/").status_code == 303


def test_login_only_sends_back_to_this_console(console: ConsoleService) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = login(console.client(), console.svc.key("approver"), next_url=target)
        assert r.status_code == 303 and r.headers["location"] == "/"


@pytest.mark.parametrize("path", ["/", "/login", "/static/console.js", "/static/console.css", "/nope",
                                  "/events"])
def test_every_response_carries_the_security_headers(console: ConsoleService, path: str) -> None:
    c = console.login()
    if path == "/events":
        with c.stream("GET", path) as r:
            headers = r.headers
            assert r.headers["content-type"].startswith("text/event-stream")
    else:
        headers = c.get(path).headers
    assert headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"


def test_a_foreign_host_header_is_refused(console: ConsoleService) -> None:
    r = console.client().get("/login", headers={"host": "evil.example"})
    assert r.status_code == 400


def test_the_html_payload_in_the_triggering_input_is_escaped(console: ConsoleService) -> None:
    approval_id = console.escalate(triggering_input=PAYLOAD, read_first=True)
    c = console.login()
    for path in ("/", f"/approvals/{approval_id}", "/fragments/queue"):
        page = c.get(path).text
        assert approval_id in page
        assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert html.escape(PAYLOAD, quote=True) in page  # shown as text...
        assert 'class="triggering"' in page and "UNTRUSTED" in page  # ...visibly marked
    # no inline script or handler anywhere the CSP would have to stop
    page = c.get(f"/approvals/{approval_id}").text
    # the task's history: the earlier read_invoice, with its outcome
    history = page[page.index('class="history"'):]
    history = history[:history.index("</table>")]
    assert "read_invoice" in history and "approve" in history
    assert "<script>" not in page and "onerror=" not in page.replace("onerror=alert", "")


def test_resolve_without_or_with_a_wrong_csrf_token_is_403_and_nothing_happens(console: ConsoleService) -> None:
    approval_id = console.escalate()
    c = console.login()
    before = len(console.svc.log_lines())
    for data in ({"decision": "approve", "comment": "no token"},
                 {"decision": "approve", "comment": "wrong token", "csrf_token": "x" * 43}):
        r = c.post(f"/approvals/{approval_id}/resolve", data=data)
        assert r.status_code == 403
    # another session's token is wrong too
    other = console.login()
    r = c.post(f"/approvals/{approval_id}/resolve",
               data={"decision": "approve", "csrf_token": csrf_of(other)})
    assert r.status_code == 403
    assert console.approval(c, approval_id)["status"] == "pending"
    assert not [x for x in console.svc.log_lines()[before:] if approval_id in x]


def test_reject_with_a_comment_and_resolving_twice_is_409(console: ConsoleService) -> None:
    approval_id = console.escalate()
    c = console.login()
    csrf = csrf_of(c)
    r = c.post(f"/approvals/{approval_id}/resolve",
               data={"csrf_token": csrf, "decision": "reject", "comment": "not this vendor"})
    assert r.status_code == 303 and r.headers["location"] == f"/approvals/{approval_id}"
    a = console.approval(c, approval_id)
    assert a["status"] == "rejected" and a["comment"] == "not this vendor" and a["approver"]["id"] == "approver"
    page = c.get(f"/approvals/{approval_id}").text
    assert 'id="decide"' not in page and "rejected" in page
    r = c.post(f"/approvals/{approval_id}/resolve", data={"csrf_token": csrf, "decision": "approve"})
    assert r.status_code == 409 and "resolved already" in r.text
    assert console.approval(c, approval_id)["status"] == "rejected"


def test_errors_map_to_status_codes(console: ConsoleService) -> None:
    c = console.login()
    csrf = csrf_of(c)
    assert c.get("/approvals/apr_00000000000000000000000000000000").status_code == 404
    assert c.get("/approvals/not%20an%20id").status_code == 400
    approval_id = console.escalate()
    r = c.post(f"/approvals/{approval_id}/resolve", data={"csrf_token": csrf, "decision": "approve",
                                                           "comment": "x" * 1025})
    assert r.status_code == 400 and "comment" in r.text
    r = c.post(f"/approvals/{approval_id}/resolve", data={"csrf_token": csrf, "decision": "maybe"})
    assert r.status_code == 400
    assert console.approval(c, approval_id)["status"] == "pending"


def test_the_confirm_link_get_changes_nothing_and_its_token_is_single_use(console: ConsoleService) -> None:
    approval_id = console.escalate()
    links = console.sink.links(approval_id)  # what the webhook carried
    assert links["console"] == f"{console.url}/approvals/{approval_id}"
    assert links["confirm"].startswith(f"{console.url}/approvals/{approval_id}/confirm?t=")
    token = httpx.URL(links["confirm"]).params["t"]
    assert links == approval_links(console.url, approval_id, token)
    path = links["confirm"][len(console.url):]
    # without a session the link sends to the login, and the login back to the link
    anonymous = console.client()
    r = anonymous.get(path)
    assert r.status_code == 303 and httpx.URL(r.headers["location"]).params["next"] == path
    r = login(anonymous, console.svc.key("approver"), next_url=path)
    assert r.status_code == 303 and r.headers["location"] == path
    c = console.login()
    before = len(console.svc.log_lines())
    for _ in range(3):  # a mail scanner, a link preview, the approver
        r = c.get(path)
        assert r.status_code == 200 and 'id="decide"' in r.text and hidden(r.text, "t") == token
        assert f'action="/approvals/{approval_id}/confirm"' in r.text
    assert console.approval(c, approval_id)["status"] == "pending"
    assert not [x for x in console.svc.log_lines()[before:] if approval_id in x]
    # a wrong token is refused (409) and resolves nothing; so is a POST without CSRF
    r = c.post(f"/approvals/{approval_id}/confirm", data={"csrf_token": csrf_of(c), "t": token[:-2] + "xx",
                                                          "decision": "reject"})
    assert r.status_code == 409 and "link" in r.text
    r = c.post(f"/approvals/{approval_id}/confirm", data={"t": token, "decision": "reject"})
    assert r.status_code == 403
    assert console.approval(c, approval_id)["status"] == "pending"
    # the real token, once: resolved (rejected, so nothing runs)
    r = c.post(f"/approvals/{approval_id}/confirm", data={"csrf_token": csrf_of(c), "t": token,
                                                          "decision": "reject", "comment": "via the link"})
    assert r.status_code == 303
    a = console.approval(c, approval_id)
    assert a["status"] == "rejected" and a["comment"] == "via the link"
    # used: a second POST of the same token is refused, also by another approver session
    r = console.login().post(f"/approvals/{approval_id}/confirm",
                             data={"csrf_token": csrf_of(c), "t": token, "decision": "approve"})
    assert r.status_code == 403  # that session's CSRF token differs
    other = console.login()
    r = other.post(f"/approvals/{approval_id}/confirm", data={"csrf_token": csrf_of(other), "t": token,
                                                              "decision": "approve"})
    assert r.status_code == 409 and "used already" in r.text
    assert console.approval(c, approval_id)["status"] == "rejected"


def test_a_link_token_is_bound_to_its_approval(console: ConsoleService) -> None:
    first, second = console.escalate(), console.escalate()
    token = httpx.URL(console.sink.links(first)["confirm"]).params["t"]
    c = console.login()
    r = c.post(f"/approvals/{second}/confirm", data={"csrf_token": csrf_of(c), "t": token, "decision": "reject"})
    assert r.status_code == 409
    assert console.approval(c, second)["status"] == "pending" and console.approval(c, first)["status"] == "pending"


def test_events_stream_sends_pending_approvals_as_json(console: ConsoleService) -> None:
    approval_id = console.escalate(triggering_input=PAYLOAD)
    c = console.login()
    seen: list[dict] = []
    with c.stream("GET", "/events") as r:
        assert r.status_code == 200
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "approval":
                seen.append(json.loads(line[6:]))
                if any(a["approval_id"] == approval_id for a in seen):
                    break
    mine = next(a for a in seen if a["approval_id"] == approval_id)
    assert mine["status"] == "pending" and mine["triggering_input"] == PAYLOAD and mine["tool"] == "transfer_funds"


def test_a_session_whose_key_was_revoked_stops_working(console: ConsoleService, tmp_path: Path) -> None:
    """A second approver key, logged in with, then revoked (`aecl credentials
    revoke` and a reload): its session ends; the other key's does not."""
    config = str(console.svc.config_path)
    key_file = tmp_path / "second.key"
    aecl = [sys.executable, "-m", "enforcer"]
    subprocess.run([*aecl, "credentials", "add-key", "--role", "approver", "approver", "--out", str(key_file),
                    "--config", config], check=True, capture_output=True)
    console.svc.admin.ReloadPolicy(pb.ReloadPolicyRequest())
    key = key_file.read_text().strip()
    c = console.client()
    assert login(c, key).status_code == 303
    assert c.get("/").status_code == 200
    untouched = console.login()
    key_id = key.split("_", 2)[1]
    subprocess.run([*aecl, "credentials", "revoke", "approver", key_id, "--role", "approver", "--config", config],
                   check=True, capture_output=True)
    console.svc.admin.ReloadPolicy(pb.ReloadPolicyRequest())
    assert c.get("/").status_code == 303
    assert c.get("/events").status_code == 401
    assert login(console.client(), key).status_code == 401
    assert untouched.get("/").status_code == 200
