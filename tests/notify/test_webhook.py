"""The webhook notifier against a real HTTP receiver on loopback, with a
real signed audit log behind it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from enforcer.audit.keys import load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.records import NotificationRecord, Principal, parse_record
from enforcer.audit.verify import verify_file
from enforcer.config import WebhookConfig
from enforcer.console.links import approval_links
from enforcer.errors import ConfigError
from enforcer.notify import WebhookNotifier, sign, verify_signature
from enforcer.notify.webhook import display_url
from enforcer.pipeline.approvals import approval_json
from enforcer.pipeline.journal import Journal
from enforcer.state.store import Approval
from tests.notify.support import REVISION, SECRET, approval

LINK_TOKEN = "LINKTOKEN-do-not-log-" + "x" * 20


# -- the service side -------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_bytes(SECRET + b"\n")  # the trailing newline is not part of the secret
    path.chmod(0o600)
    return path


@dataclass
class Audit:
    path: Path
    log: AuditLog
    journal: Journal
    pubkey: Path

    def records(self) -> list[NotificationRecord]:
        self.close()
        assert verify_file(self.path, [load_public_key(self.pubkey)]) > 0
        out = []
        for line in self.path.read_text().splitlines():
            record = parse_record(json.loads(line)["record"])
            if isinstance(record, NotificationRecord):
                out.append(record)
        return out

    def close(self) -> None:
        self.log.close()


@pytest.fixture
def audit(tmp_path: Path, keypair):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, load_signing_key(keypair[0]))
    a = Audit(path, log, Journal(log), keypair[1])
    yield a
    a.close()


def hook(url: str, secret_file: Path, **kw) -> WebhookConfig:
    return WebhookConfig(url=url, secret_file=secret_file, **{"timeout_s": 2.0, "max_attempts": 3,
                                                             "backoff_s": 0.01, **kw})


def notifier(hooks: list[WebhookConfig], audit: Audit, *, console_url: str | None = None) -> WebhookNotifier:
    return WebhookNotifier(hooks, audit.journal, console_url=console_url, policy_revision=lambda: REVISION,
                           principal=Principal(kind="service", id="aecl"))


def deliver(n: WebhookNotifier, a: Approval) -> None:
    async def go() -> None:
        n.notify(a, LINK_TOKEN)
        await n.wait()
        await n.close()
    asyncio.run(go())


# -- delivery -----------------------------------------------------------------------


def test_delivers_the_full_context_signed(receiver, secret_file, audit):
    r = receiver(200)
    a = approval()
    n = notifier([hook(r.url + "?token=q-secret", secret_file)], audit, console_url="https://console.example/")
    deliver(n, a)

    assert len(r.requests) == 1
    got = r.requests[0]
    assert got.path == "/hooks/aecl?token=q-secret"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-aecl-approval-id"] == a.approval_id
    assert len(got.headers["x-aecl-delivery"]) == 36
    verify_signature(SECRET, got.headers["x-aecl-signature"], got.body, now=time.time())

    doc = json.loads(got.body)
    assert doc["type"] == "approval.pending"
    assert doc["approval"] == json.loads(json.dumps(approval_json(a)))
    assert doc["links"] == approval_links("https://console.example", a.approval_id, LINK_TOKEN)
    assert doc["sent_at"].endswith("Z")
    # The context an approver decides on is all there.
    shown = doc["approval"]
    assert shown["tool"] == "transfer_funds" and shown["args"] == {"vendor": "V-221", "amount": 100000}
    assert shown["risk_weights"] == {"irreversible": 0.35, "untrusted": 0.5}
    assert shown["triggering_input"] == a.triggering_input and shown["untrusted_input_source"] is True
    assert shown["history"][0]["tool"] == "read_invoice"

    [record] = audit.records()
    assert (record.outcome, record.delivered, record.status_code, record.attempt) == ("delivered", True, 200, 1)
    assert record.url == display_url(r.url) == r.url  # the query string is gone
    assert record.rpc == "Notify" and record.channel == "webhook"
    assert record.hitl_approval_id == a.approval_id and record.policy_applied == REVISION
    assert record.agent_id == a.agent_id and record.task_id == a.task_id and record.action_name == a.action_name
    assert record.input_payload == {"delivery_id": got.headers["x-aecl-delivery"]}
    text = audit.path.read_text()
    for secret in (LINK_TOKEN, SECRET.decode(), "q-secret"):
        assert secret not in text


def test_without_a_console_the_links_are_null(receiver, secret_file, audit):
    r = receiver(204)
    deliver(notifier([hook(r.url, secret_file)], audit), approval())
    assert json.loads(r.requests[0].body)["links"] is None
    assert [x.outcome for x in audit.records()] == ["delivered"]


def test_each_webhook_gets_its_own_delivery(receiver, secret_file, audit, tmp_path):
    other_secret = tmp_path / "other.secret"
    other_secret.write_text("another-secret")
    other_secret.chmod(0o600)
    r1, r2 = receiver(200), receiver(200)
    deliver(notifier([hook(r1.url, secret_file), hook(r2.url, other_secret)], audit), approval())
    verify_signature(SECRET, r1.requests[0].headers["x-aecl-signature"], r1.requests[0].body, now=time.time())
    verify_signature(b"another-secret", r2.requests[0].headers["x-aecl-signature"], r2.requests[0].body,
                     now=time.time())
    assert r1.requests[0].headers["x-aecl-delivery"] != r2.requests[0].headers["x-aecl-delivery"]
    assert sorted(x.url for x in audit.records()) == sorted([r1.url, r2.url])


def test_url_userinfo_never_reaches_the_log(receiver, secret_file, audit):
    r = receiver(200)
    url = r.url.replace("http://", "http://user:pa55word@")
    deliver(notifier([hook(url, secret_file)], audit), approval())
    assert len(r.requests) == 1
    [record] = audit.records()
    assert record.url == r.url
    assert "pa55word" not in audit.path.read_text()


# -- retries -------------------------------------------------------------------------


def test_retries_after_errors_then_delivers(receiver, secret_file, audit):
    r = receiver(500, 500, 200)
    deliver(notifier([hook(r.url, secret_file, max_attempts=5)], audit), approval())
    assert len(r.requests) == 3
    assert len({x.headers["x-aecl-delivery"] for x in r.requests}) == 1  # one delivery, three attempts
    for got in r.requests:
        verify_signature(SECRET, got.headers["x-aecl-signature"], got.body, now=time.time())
    records = audit.records()
    assert [(x.attempt, x.outcome, x.status_code, x.delivered) for x in records] == [
        (1, "failed", 500, False), (2, "failed", 500, False), (3, "delivered", 200, True)]
    assert "retrying in 0.01 s" in records[0].reason and "retrying in 0.02 s" in records[1].reason
    assert len({x.input_payload["delivery_id"] for x in records}) == 1


def test_gives_up_after_max_attempts(receiver, secret_file, audit):
    r = receiver(503)
    deliver(notifier([hook(r.url, secret_file, max_attempts=3)], audit), approval())
    assert len(r.requests) == 3
    records = audit.records()
    assert [(x.attempt, x.outcome) for x in records] == [(1, "failed"), (2, "failed"), (3, "gave_up")]
    assert "gave up after 3 attempt(s)" in records[-1].reason
    assert not any(x.delivered for x in records)


def test_a_redirect_is_not_followed(receiver, secret_file, audit):
    r = receiver(302)
    deliver(notifier([hook(r.url, secret_file, max_attempts=2)], audit), approval())
    assert [x.path for x in r.requests] == ["/hooks/aecl", "/hooks/aecl"]  # never /elsewhere
    assert [(x.status_code, x.outcome) for x in audit.records()] == [(302, "failed"), (302, "gave_up")]


def test_network_errors_are_retried_and_logged(secret_file, audit):
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens
    deliver(notifier([hook(url, secret_file, max_attempts=2)], audit), approval())
    records = audit.records()
    assert [(x.attempt, x.outcome, x.status_code) for x in records] == [(1, "failed", None), (2, "gave_up", None)]
    assert records[0].error.startswith("ConnectError")


def test_no_retry_past_the_approvals_expiry(receiver, secret_file, audit):
    r = receiver(500)
    # The first retry would come after the approval expired: it is not made.
    a = approval(expires_at=time.time() + 30)
    deliver(notifier([hook(r.url, secret_file, max_attempts=5, backoff_s=60)], audit), a)
    assert len(r.requests) == 1
    [record] = audit.records()
    assert record.outcome == "gave_up" and record.attempt == 1
    assert "expires at" in record.reason and "before the next attempt" in record.reason


def test_an_expired_approval_is_not_announced(receiver, secret_file, audit):
    r = receiver(200)
    deliver(notifier([hook(r.url, secret_file)], audit), approval(expires_at=time.time() - 1))
    assert r.requests == []
    [record] = audit.records()
    assert record.outcome == "gave_up" and record.status_code is None
    assert record.reason.startswith("not sent: the approval expired")


def test_close_cancels_waiting_deliveries(receiver, secret_file, audit):
    r = receiver(500)
    n = notifier([hook(r.url, secret_file, max_attempts=10, backoff_s=30)], audit)

    async def go() -> None:
        n.notify(approval(), LINK_TOKEN)
        while not r.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the first attempt is logged; the retry waits 30 s
        await asyncio.wait_for(n.close(), 5)
        n.notify(approval(), LINK_TOKEN)  # after close: ignored

    asyncio.run(go())
    assert len(r.requests) == 1
    assert [x.outcome for x in audit.records()] == ["failed"]


def test_notify_returns_before_anything_is_sent(receiver, secret_file, audit):
    r = receiver(200)
    n = notifier([hook(r.url, secret_file)], audit)

    async def go() -> int:
        n.notify(approval(), LINK_TOKEN)
        sent_before = len(r.requests)
        await n.wait()
        await n.close()
        return sent_before

    assert asyncio.run(go()) == 0
    assert len(r.requests) == 1


# -- the secret file ----------------------------------------------------------------


def test_secret_readable_by_others_is_refused(secret_file, audit):
    secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match=f"{secret_file}: webhook secret is accessible by group or others "
                                          r"\(mode 0644\); run `chmod 600` on it"):
        notifier([hook("https://hooks.example/x", secret_file)], audit)


def test_empty_secret_is_refused(tmp_path, audit):
    path = tmp_path / "empty.secret"
    path.write_text("\n  \n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=f"{path}: webhook secret is empty"):
        notifier([hook("https://hooks.example/x", path)], audit)


def test_missing_or_symlinked_secret_is_refused(tmp_path, secret_file, audit):
    with pytest.raises(ConfigError, match="missing.secret: webhook secret not readable"):
        notifier([hook("https://hooks.example/x", tmp_path / "missing.secret")], audit)
    link = tmp_path / "link.secret"
    link.symlink_to(secret_file)
    with pytest.raises(ConfigError, match="link.secret: webhook secret not readable"):
        notifier([hook("https://hooks.example/x", link)], audit)


# -- verification, as a receiver does it ------------------------------------------------


def test_verify_signature_refuses_tampering_replays_and_other_secrets():
    body = b'{"type":"approval.pending"}'
    now = time.time()
    header = sign(SECRET, body, int(now))
    verify_signature(SECRET, header, body, now=now)
    with pytest.raises(ValueError, match="signature mismatch"):
        verify_signature(SECRET, header, body.replace(b"pending", b"pendinG"), now=now)
    with pytest.raises(ValueError, match="signature mismatch"):
        verify_signature(b"another secret", header, body, now=now)
    old = sign(SECRET, body, int(now) - 301)
    with pytest.raises(ValueError, match="outside the tolerance of 300 s"):
        verify_signature(SECRET, old, body, now=now)
    verify_signature(SECRET, old, body, now=now, tolerance_s=600)
    future = sign(SECRET, body, int(now) + 1000)
    with pytest.raises(ValueError, match="outside the tolerance"):
        verify_signature(SECRET, future, body, now=now)
    # The timestamp is signed: moving it forward breaks the signature.
    moved = header.replace(f"t={int(now)}", f"t={int(now) + 1}")
    with pytest.raises(ValueError, match="signature mismatch"):
        verify_signature(SECRET, moved, body, now=now)


def test_verify_signature_accepts_any_of_several_v1_values():
    body = b"{}"
    t = int(time.time())
    old = sign(b"old secret", body, t).split(",")[1]
    verify_signature(SECRET, f"{sign(SECRET, body, t)},{old}", body, now=t)
    verify_signature(b"old secret", f"{sign(SECRET, body, t)},{old}", body, now=t)


@pytest.mark.parametrize("header, why", [
    ("", "is not key=value"),
    ("v1=abcd", "no timestamp"),
    ("t=123", "no v1 signature"),
    ("t=12x,v1=ab", "not unix seconds"),
    ("t=1,t=2,v1=ab", "more than one timestamp"),
    ("t=-5,v1=ab", "not unix seconds"),
])
def test_verify_signature_refuses_malformed_headers(header, why):
    with pytest.raises(ValueError, match=why):
        verify_signature(SECRET, header, b"{}", now=time.time())


def test_display_url_drops_userinfo_query_and_fragment():
    assert display_url("https://u:p@hooks.example:8443/a/b?token=x#frag") == "https://hooks.example:8443/a/b"
    assert display_url("http://[::1]:9000/h?x") == "http://[::1]:9000/h"
