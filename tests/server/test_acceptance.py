"""The issue's acceptance path, through a generated Python client against a
real `aecl serve` process on the example configuration."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb

AGENT = "finance_agent_v2"


def start(service, agent=AGENT, goal="Pay vendor invoices: transfer funds", actions=()):
    return service.stub.StartTask(
        pb.StartTaskRequest(agent_id=agent, declared_goal=goal, declared_actions=list(actions))
    ).task_id


def request(kind, task_id, name, args=None, agent=AGENT, untrusted=False):
    s = struct_pb2.Struct()
    s.update(args or {})
    cls = pb.DecideRequest if kind == "Decide" else pb.ExecuteRequest
    return cls(task_id=task_id, agent_id=agent, call=pb.ToolCall(name=name, args=s),
               context=pb.CallContext(untrusted_input_source=untrusted))


def decide(service, task_id, name, args=None, **kw):
    return service.stub.Decide(request("Decide", task_id, name, args, **kw)).decision


def execute(service, task_id, name, args=None, **kw):
    return service.stub.Execute(request("Execute", task_id, name, args, **kw))


def entry_for(service, event_id):
    for line in service.log_lines():
        e = json.loads(line)
        if e["record"]["event_id"] == event_id:
            return e["record"]
    raise AssertionError(f"no audit entry {event_id}")


def test_start_task_returns_id_and_expiry(service):
    resp = service.stub.StartTask(pb.StartTaskRequest(agent_id=AGENT, declared_goal="read invoices"))
    assert resp.task_id.startswith("tsk_")
    assert resp.expires_at.seconds > 0


def test_read_invoice_is_approved_and_runs(service):
    task = start(service)
    d = decide(service, task, "read_invoice", {"invoice_id": "INV-1001"})
    assert d.outcome == pb.OUTCOME_APPROVE
    assert d.policy_revision.startswith("sha256:") and d.decision_id.startswith("dec_")
    r = execute(service, task, "read_invoice", {"invoice_id": "INV-1001"})
    assert r.decision.outcome == pb.OUTCOME_APPROVE
    assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, r.error
    assert r.output["invoice_id"] == "INV-1001" and r.output["amount"] == 1250
    record = entry_for(service, r.event_id)
    assert record["kind"] == "execution" and record["sandbox_id"] == r.sandbox_id


def test_delete_record_is_blocked(service):
    task = start(service)
    d = decide(service, task, "delete_record", {"record_id": "INV-1001"})
    assert d.outcome == pb.OUTCOME_BLOCK and "block list" in d.reason
    r = execute(service, task, "delete_record", {"record_id": "INV-1001"})
    assert r.status == pb.EXECUTION_STATUS_BLOCKED and not r.sandbox_id


def test_large_untrusted_transfer_escalates_and_nothing_runs(service):
    task = start(service)
    args = {"vendor": "V-221", "amount": 100000}  # the seed's call
    d = decide(service, task, "transfer_funds", args, untrusted=True)
    assert d.outcome == pb.OUTCOME_ESCALATE
    assert d.risk_score >= 0.7
    assert "requires_human_approval" in d.reason
    r = execute(service, task, "transfer_funds", args, untrusted=True)
    assert r.status == pb.EXECUTION_STATUS_PENDING_APPROVAL
    assert r.approval_id.startswith("apr_")
    assert not r.sandbox_id and not r.output.fields
    record = entry_for(service, r.event_id)
    assert record["hitl_approval_id"] == r.approval_id and record["outcome"] == "escalate"
    assert not any(json.loads(l)["record"]["kind"] == "execution" and json.loads(l)["record"]["decision_id"] == r.decision.decision_id
                   for l in service.log_lines())


def test_unknown_agent_cannot_even_start_a_task(service):
    """An agent without a manifest has no credential to prove it: refused
    at StartTask (UNAUTHENTICATED), and the refusal is logged. The policy's
    own `unknown agent` block stays, for in-process callers."""
    with pytest.raises(grpc.RpcError) as e:
        start(service, agent="ghost_agent")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = [json.loads(x) for x in service.log_lines() if '"auth_refused"' in x]
    assert refused[-1]["record"]["agent_id"] == "ghost_agent"
    assert refused[-1]["record"]["refusal"] == "missing_credential"


def test_write_outside_declared_scope_is_blocked_with_intent_reason(service):
    task = start(service, goal="Review invoice INV-1001", actions=["read_invoice"])
    d = decide(service, task, "generate_payment_report", {"vendor_id": "V-17"})
    assert d.outcome == pb.OUTCOME_BLOCK
    assert d.reason.startswith("Action scope exceeds declared task intent")


def test_write_not_named_in_goal_is_blocked_when_no_actions_declared(service):
    task = start(service, goal="Summarise open invoices")
    d = decide(service, task, "transfer_funds", {"vendor": "V-221", "amount": 10})
    assert d.outcome == pb.OUTCOME_BLOCK and d.gate == "intent"


def test_fifty_first_call_of_a_run_is_blocked(service):
    task = start(service, goal="read invoices")
    for i in range(50):
        r = execute(service, task, "read_invoice", {"invoice_id": "INV-1001"})
        assert r.status == pb.EXECUTION_STATUS_SUCCEEDED, (i, r.error)
    r = execute(service, task, "read_invoice", {"invoice_id": "INV-1001"})
    assert r.status == pb.EXECUTION_STATUS_BLOCKED
    assert r.decision.reason == "call budget exhausted: 50 of 50 tool calls already made in this run"


def test_decide_is_a_dry_run_and_does_not_spend_budget(service):
    task = start(service, goal="read invoices")
    before = len(service.log_lines())
    for _ in range(60):
        assert decide(service, task, "read_invoice", {"invoice_id": "INV-1001"}).outcome == pb.OUTCOME_APPROVE
    assert len(service.log_lines()) == before + 60  # still logged, every one
    assert not any(json.loads(l)["record"]["kind"] == "execution" for l in service.log_lines()[before:])


def test_tool_failure_is_reported_as_failed(service):
    task = start(service)
    r = execute(service, task, "read_invoice", {"invoice_id": "INV-9999"})
    assert r.status == pb.EXECUTION_STATUS_FAILED
    assert "exit status 3" in r.error and "no invoice" in r.error


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.ClearField("call"), "call"),
        (lambda r: setattr(r.call, "name", "launch_missiles"), "call.name"),
        (lambda r: r.call.args.update({"amount": float("nan")}), "call.args.amount"),
        (lambda r: r.call.args.update({"amount": float("inf")}), "call.args.amount"),
        (lambda r: r.call.args.update({"blob": "x" * 70_000}), "call.args"),
        (lambda r: setattr(r.context, "triggering_input", "y" * 20_000), "context.triggering_input"),
        # The registry's args_schema (examples/tools.yaml), before the policy.
        (lambda r: r.call.args.Clear(), "call.args.invoice_id"),
        (lambda r: r.call.args.update({"invoice_id": 1001}), "call.args.invoice_id"),
    ],
)
@pytest.mark.parametrize("rpc", ["Decide", "Execute"])
def test_bad_input_is_invalid_argument_naming_the_field_and_logged(service, rpc, mutate, field):
    task = start(service)
    req = request(rpc, task, "read_invoice", {"invoice_id": "INV-1001"})
    mutate(req)
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        getattr(service.stub, rpc)(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":") or err.value.details().startswith(field + " "), err.value.details()
    new = [json.loads(l)["record"] for l in service.log_lines()[before:]]
    assert [r["kind"] for r in new] == ["rejected"]
    assert new[0]["outcome"] == "rejected" and field in new[0]["reason"]


@pytest.mark.parametrize(
    "mutate, field, refusal",
    [
        (lambda r: r.ClearField("agent_id"), "agent_id", "wrong_agent"),
        (lambda r: r.ClearField("task_id"), "task_id", "wrong_task"),
        (lambda r: setattr(r, "agent_id", "bad agent id!"), "agent_id", "wrong_agent"),
    ],
)
@pytest.mark.parametrize("rpc", ["Decide", "Execute"])
def test_identity_fields_that_are_not_the_tokens_are_permission_denied_naming_the_field_and_logged(
        service, rpc, mutate, field, refusal):
    """agent_id and task_id are checked against the task token before the
    request is validated: a missing or malformed id is not the token's, so
    PERMISSION_DENIED (an `auth_refused` entry), still naming the field."""
    task = start(service)
    req = request(rpc, task, "read_invoice", {"invoice_id": "INV-1001"})
    mutate(req)
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        getattr(service.stub, rpc)(req)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details().startswith(field + ":"), err.value.details()
    new = [json.loads(l)["record"] for l in service.log_lines()[before:]]
    assert [r["kind"] for r in new] == ["auth_refused"]
    assert new[0]["outcome"] == "refused" and new[0]["refusal"] == refusal and new[0]["rpc"] == rpc
    assert new[0]["principal"]["id"] == AGENT and new[0]["status"] == "PERMISSION_DENIED"


def test_args_that_do_not_match_the_tools_schema_never_reach_the_policy_or_the_sandbox(service):
    """The issue: read_invoice without invoice_id was approved, ran and failed."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    task = start(service)
    before = len(service.log_lines())
    for args, message in (({}, "call.args.invoice_id: is required"),
                          ({"invoice_id": ["INV-1001"]}, "call.args.invoice_id: must be a string, not a list")):
        with pytest.raises(grpc.RpcError) as err:
            execute(service, task, "read_invoice", args)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details() == message
        bad = error_details_pb2.BadRequest()
        assert rpc_status.from_call(err.value).details[1].Unpack(bad)
        assert bad.field_violations[0].field == "call.args.invoice_id"
    new = [json.loads(l)["record"] for l in service.log_lines()[before:]]
    assert [r["kind"] for r in new] == ["rejected", "rejected"]  # no decision, no execution
    assert [r["action_name"] for r in new] == ["read_invoice", "read_invoice"]
    with pytest.raises(grpc.RpcError) as err:
        execute(service, task, "transfer_funds", {"vendor": "V-221", "amount": "100000"})
    assert err.value.details() == "call.args.amount: must be an integer, not a string"
    # The old shape ({amount, to_account}) is refused too, naming what is missing or extra.
    with pytest.raises(grpc.RpcError) as err:
        execute(service, task, "transfer_funds", {"amount": 100000, "to_account": "X"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "call.args.vendor: is required"


def test_args_nested_deeper_than_the_limit_are_refused(service):
    task = start(service)
    req = request("Decide", task, "read_invoice")
    nested: dict = {"leaf": 1}
    for _ in range(20):
        nested = {"n": nested}
    req.call.args.update({"deep": nested})
    with pytest.raises(grpc.RpcError) as err:
        service.stub.Decide(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("call.args.deep.n.n") and "nested deeper than 16" in err.value.details()


def test_unknown_task_is_refused_and_logged(service):
    """A task token is bound to its task, so Decide on a task id that is not
    the token's is PERMISSION_DENIED (wrong_task) whether or not that task
    exists; NOT_FOUND for an unknown task is still what an administrator
    revoking it gets."""
    start(service)  # the agent's latest token, for a task that is not the one named
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        decide(service, "tsk_doesnotexist", "read_invoice", {"invoice_id": "INV-1001"})
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    record = json.loads(service.log_lines()[before])["record"]
    assert record["kind"] == "auth_refused" and record["refusal"] == "wrong_task"
    assert record["task_id"] == "tsk_doesnotexist"

    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        service.admin.RevokeTask(pb.RevokeTaskRequest(task_id="tsk_doesnotexist", reason="test"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    record = json.loads(service.log_lines()[before])["record"]
    assert record["kind"] == "rejected" and record["task_id"] == "tsk_doesnotexist"


def test_task_of_another_agent_is_permission_denied(service):
    task = start(service)
    with pytest.raises(grpc.RpcError) as err:
        decide(service, task, "read_invoice", {"invoice_id": "INV-1001"}, agent="other_agent")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_agent_claims_about_risk_are_ignored(service):
    """Risk comes from the registry: an agent cannot lower it through args or
    context. transfer_funds takes no argument beyond its schema's, so a claim
    in its args is refused before the policy; without them, the registry's
    flags stand."""
    task = start(service)
    args = {"vendor": "V-221", "amount": 100000}
    claims = {"irreversible": False, "affects_production": False, "risk_score": 0, "untrusted_input_source": False}
    before = len(service.log_lines())
    with pytest.raises(grpc.RpcError) as err:
        decide(service, task, "transfer_funds", {**args, **claims})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "call.args.affects_production: is not an argument of this tool"
    assert [json.loads(l)["record"]["kind"] for l in service.log_lines()[before:]] == ["rejected"]
    d = decide(service, task, "transfer_funds", args)
    assert d.outcome == pb.OUTCOME_ESCALATE
    assert {"affects_production", "large_amount"} <= set(d.risk_flags)  # transfer_funds is compensable
    # A tool whose schema leaves room for extra args: there the claims are ignored.
    d = decide(service, task, "read_invoice", {"invoice_id": "INV-1001", **claims}, untrusted=True)
    assert list(d.risk_flags) == ["untrusted_input"] and d.risk_score > 0


def test_health_service_reports_serving(service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(service.channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service="aecl.v1.EnforcerService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
