"""The notifier as the service wires it: a real `aecl serve` announces an
escalation to a webhook on loopback, signed, with console links, and logs
the delivery."""

from __future__ import annotations

import json
import time

from enforcer.notify import verify_signature
from tests.conftest import Service, free_port, write_config
from tests.notify.support import SECRET
from tests.test_approvals_cli import escalate


def test_an_escalation_is_announced_signed(tmp_path, receiver):
    r = receiver(200)
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    console = f"127.0.0.1:{free_port()}"
    svc = Service(write_config(tmp_path / "svc", approvals={"webhooks": [
        {"url": r.url, "secret_file": str(secret), "backoff_s": 0.05, "max_attempts": 3}]},
        console={"listen": console}))
    try:
        aid = escalate(svc)
        deadline = time.monotonic() + 20
        while not any('"notification"' in line for line in svc.log_lines()) and time.monotonic() < deadline:
            time.sleep(0.05)
        entries = [json.loads(x)["record"] for x in svc.log_lines()]
    finally:
        svc.stop()
    [got] = r.requests
    verify_signature(SECRET, got.headers["x-aecl-signature"], got.body, now=time.time())
    doc = json.loads(got.body)
    assert doc["approval"]["approval_id"] == aid == got.headers["x-aecl-approval-id"]
    assert doc["links"]["console"] == f"http://{console}/approvals/{aid}"
    assert doc["links"]["confirm"].startswith(f"http://{console}/approvals/{aid}/confirm?t=")
    [note] = [e for e in entries if e["kind"] == "notification"]
    assert note["hitl_approval_id"] == aid and note["outcome"] == "delivered" and note["url"] == r.url
    token = doc["links"]["confirm"].partition("?t=")[2]
    assert token and not any(token in json.dumps(e) for e in entries)
