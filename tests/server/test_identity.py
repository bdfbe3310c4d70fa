"""Issue 12 against the real service: API keys, task tokens, roles,
revocation, refusals logged. (TLS and mTLS: test_tls.py.)"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.identity.tokens import TokenIssuer, load_token_key
from tests.conftest import EXAMPLES, Service, free_port, write_config

AGENT = "finance_agent_v2"
OTHER = "other_agent"
GOAL = "Pay vendor invoices: read invoices, transfer funds"
TTL = 2
TASK_S = 8


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("identity")
    agents = tmp / "agents"
    agents.mkdir()
    manifest = yaml.safe_load((EXAMPLES / "agents" / f"{AGENT}.yaml").read_text())
    manifest["token_ttl_seconds"] = TTL
    (agents / f"{AGENT}.yaml").write_text(yaml.safe_dump(manifest))
    (agents / f"{OTHER}.yaml").write_text(yaml.safe_dump({**manifest, "agent_id": OTHER}))
    port = free_port()
    s = Service(write_config(tmp / "svc", agents_dir=str(agents), sandbox={"task_timeout_s": TASK_S},
                             metrics={"listen": f"127.0.0.1:{port}"}))
    s.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield s
    s.stop()


def args(**kw) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(kw)
    return s


def start(svc, agent=AGENT, credential=None):
    return svc.bare.StartTask(pb.StartTaskRequest(agent_id=agent, declared_goal=GOAL,
                                                  credential=svc.key(agent) if credential is None else credential))


def decide(svc, token, task_id, agent=AGENT, metadata=None):
    md = metadata if metadata is not None else (("authorization", f"Bearer {token}"),)
    return svc.bare.Decide(pb.DecideRequest(task_id=task_id, agent_id=agent, call=pb.ToolCall(
        name="read_invoice", args=args(invoice_id="INV-1001"))), metadata=md)


def refused(fn, code):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    return e.value


def records(svc, kind):
    return [json.loads(x)["record"] if "record" in json.loads(x) else json.loads(x)
            for x in svc.log_lines() if f'"kind":"{kind}"' in x.replace(" ", "")]


def last_refusal(svc):
    return records(svc, "auth_refused")[-1]


def test_a_valid_key_gets_a_token_whose_calls_work_and_name_the_principal(svc):
    t = start(svc)
    assert t.token.startswith("v4.public.")
    assert t.token_expires_at.ToSeconds() <= t.expires_at.ToSeconds()
    d = decide(svc, t.token, t.task_id)
    assert d.decision.outcome == pb.OUTCOME_APPROVE
    started = [r for r in records(svc, "task_started") if r["task_id"] == t.task_id][0]
    key_id = svc.key(AGENT).split("_")[1]
    assert started["principal"]["kind"] == "agent" and started["principal"]["id"] == AGENT
    assert started["principal"]["key_id"] == key_id and started["token_id"].startswith("tok_")
    decision = [r for r in records(svc, "decision") if r["task_id"] == t.task_id][0]
    assert decision["principal"]["token_id"] == started["token_id"]
    # The policy input carries who is really calling.
    assert decision["policy_input"]["principal"] == {"kind": "agent", "id": AGENT}
    # No secret reaches the log.
    text = "\n".join(svc.log_lines())
    assert svc.key(AGENT) not in text and t.token not in text


def test_after_the_ttl_the_token_fails_and_renewal_gives_a_new_one(svc):
    t = start(svc)
    assert decide(svc, t.token, t.task_id).decision.outcome == pb.OUTCOME_APPROVE
    time.sleep(TTL + 0.3)
    refused(lambda: decide(svc, t.token, t.task_id), grpc.StatusCode.UNAUTHENTICATED)
    assert last_refusal(svc)["refusal"] == "expired"
    r = svc.bare.RenewTaskToken(pb.RenewTaskTokenRequest(agent_id=AGENT, task_id=t.task_id,
                                                         credential=svc.key(AGENT)))
    assert r.token != t.token
    assert decide(svc, r.token, t.task_id).decision.outcome == pb.OUTCOME_APPROVE
    assert [x for x in records(svc, "token_renewed") if x["task_id"] == t.task_id]


def test_renewal_is_refused_once_the_task_is_over(svc):
    t = start(svc)
    time.sleep(TASK_S + 0.3)
    e = refused(lambda: svc.bare.RenewTaskToken(pb.RenewTaskTokenRequest(
        agent_id=AGENT, task_id=t.task_id, credential=svc.key(AGENT))), grpc.StatusCode.FAILED_PRECONDITION)
    assert "ended" in e.details()


def test_a_token_used_for_another_agent_or_task_is_permission_denied(svc):
    mine, theirs = start(svc), start(svc, OTHER)
    refused(lambda: decide(svc, mine.token, mine.task_id, agent=OTHER), grpc.StatusCode.PERMISSION_DENIED)
    r = last_refusal(svc)
    assert r["refusal"] == "wrong_agent" and r["status"] == "PERMISSION_DENIED"
    assert r["principal"]["id"] == AGENT and r["agent_id"] == OTHER
    refused(lambda: decide(svc, mine.token, theirs.task_id), grpc.StatusCode.PERMISSION_DENIED)
    assert last_refusal(svc)["refusal"] == "wrong_task"
    # Another agent's key cannot start a task as this one either.
    refused(lambda: start(svc, AGENT, credential=svc.key(OTHER)), grpc.StatusCode.PERMISSION_DENIED)


@pytest.mark.parametrize("make, reason", [
    (lambda svc, t: TokenIssuer(Ed25519PrivateKey.generate(), "aecl").issue(
        agent_id=AGENT, task_id=t.task_id, scope=(), ttl_s=60, not_after=time.time() + 60, now=time.time()).token,
     "bad_signature"),
    (lambda svc, t: t.token[:-7], None),
    (lambda svc, t: TokenIssuer(load_token_key(svc.credentials_dir.parent / "keys" / "token.key"), "elsewhere").issue(
        agent_id=AGENT, task_id=t.task_id, scope=(), ttl_s=60, not_after=time.time() + 60, now=time.time()).token,
     "wrong_audience"),
    (lambda svc, t: "not-a-token", "malformed_token"),
], ids=["forged", "truncated", "other_audience", "garbage"])
def test_bad_tokens_are_unauthenticated_and_logged(svc, make, reason):
    t = start(svc)
    bad = make(svc, t)
    before = len(records(svc, "auth_refused"))
    refused(lambda: decide(svc, bad, t.task_id), grpc.StatusCode.UNAUTHENTICATED)
    after = records(svc, "auth_refused")
    assert len(after) == before + 1
    assert after[-1]["status"] == "UNAUTHENTICATED" and after[-1]["rpc"] == "Decide"
    assert after[-1]["refusal"] in ((reason,) if reason else ("bad_signature", "malformed_token"))
    assert bad not in "\n".join(svc.log_lines())


def test_missing_and_duplicate_authorization_are_refused(svc):
    t = start(svc)
    refused(lambda: decide(svc, t.token, t.task_id, metadata=()), grpc.StatusCode.UNAUTHENTICATED)
    assert last_refusal(svc)["refusal"] == "missing_token"
    two = (("authorization", f"Bearer {t.token}"), ("authorization", f"Bearer {t.token}"))
    refused(lambda: decide(svc, t.token, t.task_id, metadata=two), grpc.StatusCode.UNAUTHENTICATED)
    assert last_refusal(svc)["refusal"] == "duplicate_authorization"


def test_a_revoked_tasks_token_stops_working_at_once(svc):
    t = start(svc)
    assert decide(svc, t.token, t.task_id).decision.outcome == pb.OUTCOME_APPROVE
    r = svc.admin.RevokeTask(pb.RevokeTaskRequest(task_id=t.task_id, reason="suspicious"))
    refused(lambda: decide(svc, t.token, t.task_id), grpc.StatusCode.UNAUTHENTICATED)
    assert last_refusal(svc)["refusal"] == "revoked"
    refused(lambda: svc.bare.RenewTaskToken(pb.RenewTaskTokenRequest(
        agent_id=AGENT, task_id=t.task_id, credential=svc.key(AGENT))), grpc.StatusCode.UNAUTHENTICATED)
    rev = [x for x in records(svc, "revocation") if x["event_id"] == r.event_id][0]
    assert rev["target"] == "task" and rev["principal"]["kind"] == "admin" and rev["reason"] == "suspicious"


def test_agent_credentials_never_work_for_admin_and_admin_keys_do(svc):
    t = start(svc)
    admin = pb_grpc.AdminServiceStub(svc.channel)
    for credential in (t.token, svc.key(AGENT), svc.key("approver")):
        refused(lambda: admin.GetPolicyStatus(pb.GetPolicyStatusRequest(),
                                              metadata=(("authorization", f"Bearer {credential}"),)),
                grpc.StatusCode.PERMISSION_DENIED)
        assert last_refusal(svc)["refusal"] == "wrong_role"
    refused(lambda: admin.GetPolicyStatus(pb.GetPolicyStatusRequest()), grpc.StatusCode.UNAUTHENTICATED)
    assert svc.admin.GetPolicyStatus(pb.GetPolicyStatusRequest()).policy_revision
    # ...and the admin key is no agent credential.
    refused(lambda: start(svc, AGENT, credential=svc.key("admin")), grpc.StatusCode.PERMISSION_DENIED)


def test_refusals_are_counted_by_reason(svc):
    t = start(svc)
    refused(lambda: decide(svc, "v4.public.xyz", t.task_id), grpc.StatusCode.UNAUTHENTICATED)
    body = urllib.request.urlopen(svc.metrics_url, timeout=10).read().decode()
    assert 'aecl_auth_refusals_total{reason="malformed_token"}' in body


def test_revoking_an_agent_revokes_its_tasks_and_keys_until_a_new_key(tmp_path):
    agents = tmp_path / "agents"
    shutil.copytree(EXAMPLES / "agents", agents)
    config = write_config(tmp_path / "svc", agents_dir=str(agents))
    s = Service(config)
    try:
        old_key = s.key(AGENT)
        t = start(s)
        r = s.admin.RevokeAgent(pb.RevokeAgentRequest(agent_id=AGENT, reason="compromised"))
        assert r.tasks_revoked == 1
        refused(lambda: decide(s, t.token, t.task_id), grpc.StatusCode.UNAUTHENTICATED)
        refused(lambda: start(s, AGENT, credential=old_key), grpc.StatusCode.UNAUTHENTICATED)
        assert last_refusal(s)["refusal"] == "revoked"
        # An operator issues a new key; the service sees it on its next reload (it watches the folder).
        from enforcer.config import load_config
        from enforcer.identity.provision import add_key
        new = add_key(load_config(config), "agent", AGENT)
        s.admin.ReloadPolicy(pb.ReloadPolicyRequest())
        t2 = start(s, AGENT, credential=new.key)
        assert decide(s, t2.token, t2.task_id).decision.outcome == pb.OUTCOME_APPROVE
    finally:
        s.stop()
