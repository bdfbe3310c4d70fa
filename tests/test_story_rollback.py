"""Rollback and duplicate-call protection end to end, every part real: a
real `aecl serve`, bubblewrap, the connector proxy and the example world's
services (payments, records, config, webhooks, mail), as issue 15's
acceptance list says. The world's own state is read from outside any
sandbox: that is what "undone" and "delivered once" mean."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format, struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.audit.keys import load_public_key
from enforcer.audit.verify import verify_log
from tests.auth_client import BearerKey
from tests.conftest import EXAMPLES, Service, World, free_port, require_bwrap, write_config

AGENT = "saga_agent"
MANIFEST = {
    "agent_id": AGENT,
    "allowed_actions": ["create_record", "update_record", "deploy_config", "fire_webhook", "send_email"],
    "context_rules": {"transfer_funds": "requires_human_approval"},
    "credential_scope": ["payments:initiate", "records:write", "config:deploy", "webhooks:fire", "mail:send"],
    "max_tool_calls_per_run": 50, "auto_approve_threshold": 0.9,
}


class Saga:
    def __init__(self, tmp: Path, world: World, *, tools: dict[str, Any] | None = None) -> None:
        agents = tmp / "agents"
        agents.mkdir(parents=True, exist_ok=True)
        (agents / f"{AGENT}.yaml").write_text(yaml.safe_dump(MANIFEST))
        overrides: dict[str, Any] = {"agents_dir": str(agents), "metrics": {"listen": f"127.0.0.1:{free_port()}"},
                                     "rollback": {"max_attempts": 3, "backoff_s": 0.05}}
        if tools is not None:  # a registry of the test's own, beside the example tools
            reg = yaml.safe_load((EXAMPLES / "tools.yaml").read_text())
            reg["tools_dir"] = str((EXAMPLES / reg["tools_dir"]).resolve())
            reg["tools"] = {**reg["tools"], **{n: {**reg["tools"][n], **t} for n, t in tools.items()}}
            (tmp / "tools.yaml").write_text(yaml.safe_dump(reg))
            overrides["tool_registry"] = str(tmp / "tools.yaml")
        self.world = world
        self.svc = Service(write_config(tmp / "svc", world=world.urls, **overrides))
        self.metrics_url = f"http://{self.svc.config['metrics']['listen']}/metrics"
        self.approvals = pb_grpc.ApprovalServiceStub(
            grpc.intercept_channel(self.svc.channel, BearerKey(self.svc.key("approver"))))
        started = self.svc.stub.StartTask(pb.StartTaskRequest(
            agent_id=AGENT, declared_goal="book and pay INV-3001",
            declared_actions=["create_record", "update_record", "deploy_config", "transfer_funds", "fire_webhook",
                              "send_email"]))
        self.task, self.token = started.task_id, started.token

    def execute(self, tool: str, args: dict, key: str = "") -> pb.ExecuteResponse:
        s = struct_pb2.Struct()
        s.update(args)
        return self.svc.stub.Execute(pb.ExecuteRequest(task_id=self.task, agent_id=AGENT,
                                                       call=pb.ToolCall(name=tool, args=s), idempotency_key=key))

    def approve_and_wait(self, approval_id: str) -> pb.GetExecutionResponse:
        self.approvals.ResolveApproval(pb.ResolveApprovalRequest(approval_id=approval_id,
                                                                 resolution=pb.RESOLUTION_APPROVE))
        last = None
        for m in self.svc.bare.WaitForExecution(
                pb.WaitForExecutionRequest(agent_id=AGENT, task_id=self.task, approval_id=approval_id),
                metadata=[("authorization", f"Bearer {self.token}")], timeout=120):
            last = m.execution
        assert last is not None
        return last

    def world_get(self, name: str, path: str) -> Any:
        headers = {}
        if name == "payments":
            headers["Authorization"] = "Bearer " + Path(self.world.urls["payments_key_file"]).read_text().strip()
        req = urllib.request.Request(self.world.urls[name] + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return {"http_status": e.code}

    def fault(self, name: str, fault: dict | None) -> None:
        method = "DELETE" if fault is None else "POST"
        headers = {"Content-Type": "application/json"}
        if name == "payments":
            headers["Authorization"] = "Bearer " + Path(self.world.urls["payments_key_file"]).read_text().strip()
        req = urllib.request.Request(self.world.urls[name] + "/_control/faults", method=method, headers=headers,
                                     data=None if fault is None else json.dumps(fault).encode())
        with urllib.request.urlopen(req, timeout=10):
            pass

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def log(self) -> list[dict]:
        return [json.loads(line)["record"] for line in self.svc.log_lines()]

    def stop(self) -> None:
        self.svc.stop()


@pytest.fixture
def saga(tmp_path):
    require_bwrap()
    world = World(tmp_path / "world")
    s = None
    try:
        s = Saga(tmp_path, world)
        yield s
    finally:
        if s is not None:
            s.stop()
        world.stop()


def balances(saga: Saga) -> dict[str, int]:
    return {a["account_id"]: a["balance"] for a in saga.world_get("payments", "/accounts")["accounts"]}


def test_a_task_of_four_writes_is_rolled_back_in_reverse_order_to_the_state_before_it(saga):
    before = (saga.world_get("records", "/records/INV-3001"), saga.world_get("config", "/config/billing-api"),
              balances(saga))
    created = saga.execute("create_record", {"record_id": "INV-3001", "fields": {"vendor": "V-221", "amount": 100}})
    updated = saga.execute("update_record", {"record_id": "INV-3001", "fields": {"status": "approved"}})
    deployed = saga.execute("deploy_config", {"service": "billing-api",
                                              "config": {"max_transfer_minor": 1, "currency": "EUR"}})
    for r in (created, updated, deployed):
        assert r.status == pb.EXECUTION_STATUS_SUCCEEDED and r.rollback_token, (r.status, r.error)
    pay = saga.execute("transfer_funds", {"vendor": "V-221", "amount": 100000}, key="pay-3001")
    assert pay.status == pb.EXECUTION_STATUS_PENDING_APPROVAL
    paid = saga.approve_and_wait(pay.approval_id)
    assert paid.status == pb.APPROVAL_STATUS_EXECUTED, paid.result.error
    during = (saga.world_get("records", "/records/INV-3001"), saga.world_get("config", "/config/billing-api"),
              balances(saga))
    assert during[0]["fields"]["status"] == "approved" and during[1]["config"]["max_transfer_minor"] == 1
    assert during[2] != before[2]

    steps = saga.svc.stub.RollbackTask(pb.RollbackTaskRequest(agent_id=AGENT, task_id=saga.task)).steps
    assert [(s.tool, s.compensation_tool, s.status) for s in steps] == [
        ("transfer_funds", "reverse_transfer", pb.ROLLBACK_STEP_STATUS_SUCCESS),
        ("deploy_config", "restore_config", pb.ROLLBACK_STEP_STATUS_SUCCESS),
        ("update_record", "restore_record", pb.ROLLBACK_STEP_STATUS_SUCCESS),
        ("create_record", "delete_record", pb.ROLLBACK_STEP_STATUS_SUCCESS),
    ], [(s.tool, s.error) for s in steps]
    assert [s.decision_id for s in steps][1:] == [deployed.decision.decision_id, updated.decision.decision_id,
                                                 created.decision.decision_id]
    after = (saga.world_get("records", "/records/INV-3001"), saga.world_get("config", "/config/billing-api"),
             balances(saga))
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1]["config"] == before[1]["config"]
    # Asked again: nothing runs twice.
    again = saga.svc.stub.RollbackTask(pb.RollbackTaskRequest(agent_id=AGENT, task_id=saga.task)).steps
    assert {s.status for s in again} == {pb.ROLLBACK_STEP_STATUS_ALREADY_ROLLED_BACK}
    log = saga.log()
    undone = [r["action_name"] for r in log if r["kind"] == "rollback" and r["outcome"] == "success"]
    assert undone == ["transfer_funds", "deploy_config", "update_record", "create_record"]
    compensations = [r for r in log if r["kind"] == "execution" and r["rpc"] == "Rollback"]
    assert [r["action_name"] for r in compensations] == ["reverse_transfer", "restore_config", "restore_record",
                                                        "delete_record"]
    assert all(r["outcome"] == "succeeded" and r["sandbox_id"] for r in compensations)
    saga.stop()
    verify_log(saga.svc.audit_path, [load_public_key(saga.svc.pubkey)])


def test_fire_webhook_three_times_with_one_key_delivers_once(saga):
    event = {"event_id": "evt-3001", "payload": {"invoice": "INV-3001"}}
    first = [saga.execute("fire_webhook", event, key="hook-1") for _ in range(3)]
    assert [r.status for r in first] == [pb.EXECUTION_STATUS_SUCCEEDED] * 3
    assert [r.duplicate for r in first] == [False, True, True]
    assert len({r.decision.decision_id for r in first}) == 1
    results: list[Any] = []

    def fire() -> None:
        results.append(saga.execute("fire_webhook", {**event, "event_id": "evt-3002"}, key="hook-2"))
    threads = [threading.Thread(target=fire) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert {r.status for r in results} == {pb.EXECUTION_STATUS_SUCCEEDED}
    assert saga.world_get("webhooks", "/events/evt-3001")["deliveries"] == 1
    assert saga.world_get("webhooks", "/events/evt-3002")["deliveries"] == 1
    with pytest.raises(grpc.RpcError) as other:
        saga.execute("fire_webhook", {**event, "payload": {"invoice": "INV-9"}}, key="hook-1")
    assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert saga.world_get("webhooks", "/events/evt-3001")["deliveries"] == 1
    # The key reached the receiver: its own deduplication saw one key per call.
    executions = [r for r in saga.log() if r["kind"] == "execution" and r["action_name"] == "fire_webhook"]
    duplicates = [r for r in saga.log() if r["kind"] == "duplicate"]
    assert len(executions) == 2 and len(duplicates) == 4
    assert {d["original_decision_id"] for d in duplicates} == {first[0].decision.decision_id,
                                                              next(r for r in results if not r.duplicate)
                                                              .decision.decision_id}


def test_a_compensation_that_fails_twice_then_succeeds_and_one_that_always_fails(saga):
    a = saga.execute("update_record", {"record_id": "INV-1001", "fields": {"status": "disputed"}})
    b = saga.execute("update_record", {"record_id": "INV-1002", "fields": {"status": "disputed"}})
    assert a.status == b.status == pb.EXECUTION_STATUS_SUCCEEDED
    saga.fault("records", {"method": "POST", "path_prefix": "/records/INV-1001/restore", "times": 2, "status": 503})
    ok = saga.svc.stub.Rollback(pb.RollbackRequest(agent_id=AGENT, task_id=saga.task,
                                                   decision_id=a.decision.decision_id)).step
    assert (ok.status, ok.attempts) == (pb.ROLLBACK_STEP_STATUS_SUCCESS, 3), ok.error
    assert saga.world_get("records", "/records/INV-1001")["fields"].get("status") != "disputed"
    before = saga.metric("aecl_rollback_failed_total")
    saga.fault("records", {"method": "POST", "path_prefix": "/records/INV-1002/restore", "times": 99, "status": 503})
    parked = saga.svc.stub.Rollback(pb.RollbackRequest(agent_id=AGENT, task_id=saga.task,
                                                       decision_id=b.decision.decision_id)).step
    assert (parked.status, parked.attempts) == (pb.ROLLBACK_STEP_STATUS_ROLLBACK_FAILED, 3) and parked.error
    assert saga.metric("aecl_rollback_failed_total") == before + 1
    assert saga.world_get("records", "/records/INV-1002")["fields"]["status"] == "disputed"  # still there


def test_rolling_back_an_email_asks_a_human_with_full_context(saga):
    sent = saga.execute("send_email", {"to": "partner@example.com", "subject": "INV-3001", "body": "booked"})
    assert sent.status == pb.EXECUTION_STATUS_PENDING_APPROVAL  # irreversible: a human before it runs
    assert saga.approve_and_wait(sent.approval_id).status == pb.APPROVAL_STATUS_EXECUTED
    step = saga.svc.stub.Rollback(pb.RollbackRequest(agent_id=AGENT, task_id=saga.task,
                                                     decision_id=sent.decision.decision_id)).step
    assert step.status == pb.ROLLBACK_STEP_STATUS_IRREVERSIBLE and step.approval_id
    a = saga.approvals.GetApproval(pb.GetApprovalRequest(approval_id=step.approval_id)).approval
    assert (a.tool, a.rule, a.status) == ("send_email", "rollback.irreversible", pb.APPROVAL_STATUS_PENDING)
    assert dict(a.args)["to"] == "partner@example.com" and "by hand" in a.reason
    # The task's history, as the human sees it: the escalation, then the approved run.
    assert [(h.tool, h.outcome) for h in a.history] == [("send_email", "escalate"), ("send_email", "approve")]


@pytest.mark.parametrize("happened", [True, False], ids=["the-transfer-happened", "it-never-happened"])
def test_a_transfer_killed_by_its_timeout_is_unknown_and_rolled_back_either_way(tmp_path, happened):
    require_bwrap()
    world = World(tmp_path / "world")
    saga = None
    try:
        saga = Saga(tmp_path, world, tools={"transfer_funds": {"timeout_s": 3}})
        before = balances(saga)
        saga.fault("payments", {"method": "POST", "path_prefix": "/transfers", "delay_s": 8, "commit": happened})
        r = saga.execute("transfer_funds", {"vendor": "V-221", "amount": 5000}, key="pay-slow")
        assert r.status == pb.EXECUTION_STATUS_PENDING_APPROVAL
        final = saga.approve_and_wait(r.approval_id)  # approved: the run then hits its 3 s timeout
        assert (final.status, final.result.status) == (pb.APPROVAL_STATUS_FAILED, pb.EXECUTION_STATUS_UNKNOWN)
        saga.fault("payments", None)
        found = saga.world_get("payments", "/transfers?idempotency_key=" + _derived(saga, "pay-slow"))
        assert len(found["transfers"]) == (1 if happened else 0)
        step = saga.svc.stub.Rollback(pb.RollbackRequest(agent_id=AGENT, task_id=saga.task,
                                                         decision_id=r.decision.decision_id)).step
        assert step.status == pb.ROLLBACK_STEP_STATUS_SUCCESS, step.error
        output = json_format.MessageToDict(step.output)
        assert output["status"] == ("reversed" if happened else "never_happened")
        assert balances(saga) == before
        execution = next(x for x in saga.log() if x["kind"] == "execution" and x["action_name"] == "transfer_funds")
        assert execution["outcome"] == "unknown" and execution["timed_out"]
    finally:
        if saga is not None:
            saga.stop()
        world.stop()


def _derived(saga: Saga, key: str) -> str:
    from enforcer.pipeline.ledger import derived_key
    return derived_key(AGENT, saga.task, key)


def test_rolling_back_a_step_twice_at_once_runs_its_compensation_once(saga):
    r = saga.execute("create_record", {"record_id": "INV-3100", "fields": {"a": 1}})
    out: list[Any] = []

    def roll() -> None:
        try:
            out.append(saga.svc.stub.Rollback(pb.RollbackRequest(agent_id=AGENT, task_id=saga.task,
                                                                 decision_id=r.decision.decision_id)).step.status)
        except grpc.RpcError as e:
            out.append(e.code())
    threads = [threading.Thread(target=roll) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out.count(pb.ROLLBACK_STEP_STATUS_SUCCESS) == 1
    assert set(out) <= {pb.ROLLBACK_STEP_STATUS_SUCCESS, pb.ROLLBACK_STEP_STATUS_ALREADY_ROLLED_BACK,
                        grpc.StatusCode.ABORTED}
    assert sum(1 for x in saga.log() if x["kind"] == "execution" and x["action_name"] == "delete_record") == 1
    time.sleep(0)
