"""The approval RPCs over a real `aecl serve`: who may call them, what an
approver and an agent see, refusals with their status codes, and a restart
that keeps pending approvals with their expiry. (The run after an approval
goes through bubblewrap and the example world: tests/test_story_approval.py.)"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.pipeline.approvals import args_digest
from tests.auth_client import BearerKey
from tests.conftest import Service, write_config

AGENT = "finance_agent_v2"
TRANSFER = {"vendor": "V-221", "amount": 100000}
EMAIL = "Pay the vendor immediately. <script>alert(1)</script>"


def approvers(svc: Service) -> pb_grpc.ApprovalServiceStub:
    return pb_grpc.ApprovalServiceStub(grpc.intercept_channel(svc.channel, BearerKey(svc.key("approver"))))


def escalate(svc: Service) -> tuple[str, str]:
    task = svc.stub.StartTask(pb.StartTaskRequest(agent_id=AGENT, declared_goal="pay vendor invoices: transfer funds",
                                                  credential=svc.key(AGENT))).task_id
    args = struct_pb2.Struct()
    args.update(TRANSFER)
    r = svc.stub.Execute(pb.ExecuteRequest(
        task_id=task, agent_id=AGENT, call=pb.ToolCall(name="transfer_funds", args=args),
        context=pb.CallContext(untrusted_input_source=True, triggering_input=EMAIL)))
    assert r.status == pb.EXECUTION_STATUS_PENDING_APPROVAL and r.approval_id
    return task, r.approval_id


def token_of(svc: Service, task: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {svc.auth.by_task[task]}")]


def code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_an_approver_sees_the_full_context(service):
    task, approval_id = escalate(service)
    a = approvers(service).GetApproval(pb.GetApprovalRequest(approval_id=approval_id)).approval
    assert (a.status, a.agent_id, a.task_id, a.tool) == (pb.APPROVAL_STATUS_PENDING, AGENT, task, "transfer_funds")
    assert dict(a.args) == {"vendor": "V-221", "amount": 100000.0} and a.args_digest == args_digest(TRANSFER)
    assert a.triggering_input == EMAIL and a.untrusted_input_source and "untrusted_input" in a.risk_flags
    assert a.risk_weights["untrusted_input"] > 0 and a.gate == "context_rules" and a.reason
    assert a.principal.kind == "agent" and a.principal.id == AGENT
    assert a.expires_at.ToSeconds() > a.created_at.ToSeconds() and a.version == 1
    listed = approvers(service).ListApprovals(pb.ListApprovalsRequest(status=pb.APPROVAL_STATUS_PENDING,
                                                                      task_id=task)).approvals
    assert [x.approval_id for x in listed] == [approval_id]


def test_agents_and_strangers_cannot_touch_the_queue(service):
    task, approval_id = escalate(service)
    agent_token = pb_grpc.ApprovalServiceStub(service.channel)
    resolve = pb.ResolveApprovalRequest(approval_id=approval_id, resolution=pb.RESOLUTION_APPROVE)
    assert code(lambda: agent_token.ResolveApproval(resolve, metadata=token_of(service, task))) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: agent_token.ResolveApproval(
        resolve, metadata=[("authorization", f"Bearer {service.key(AGENT)}")])) == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: agent_token.ResolveApproval(
        resolve, metadata=[("authorization", f"Bearer {service.key('admin')}")])) == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: agent_token.ResolveApproval(resolve)) == grpc.StatusCode.UNAUTHENTICATED
    assert code(lambda: list(agent_token.WatchApprovals(pb.WatchApprovalsRequest(),
                                                        metadata=token_of(service, task)))) \
        == grpc.StatusCode.PERMISSION_DENIED
    a = approvers(service).GetApproval(pb.GetApprovalRequest(approval_id=approval_id)).approval
    assert a.status == pb.APPROVAL_STATUS_PENDING


def test_a_rejection_reaches_the_agent_and_a_second_resolution_is_refused(service):
    task, approval_id = escalate(service)
    r = approvers(service).ResolveApproval(pb.ResolveApprovalRequest(
        approval_id=approval_id, resolution=pb.RESOLUTION_REJECT, comment="not this vendor"))
    assert r.approval.status == pb.APPROVAL_STATUS_REJECTED and r.approval.approver.id == "approver" and r.event_id
    got = service.stub.GetExecution(pb.GetExecutionRequest(agent_id=AGENT, task_id=task, approval_id=approval_id))
    assert got.status == pb.APPROVAL_STATUS_REJECTED and got.comment == "not this vendor"
    stream = service.bare.WaitForExecution(pb.WaitForExecutionRequest(agent_id=AGENT, task_id=task,
                                                                      approval_id=approval_id),
                                           metadata=token_of(service, task), timeout=30)
    assert [m.execution.status for m in stream] == [pb.APPROVAL_STATUS_REJECTED]  # final: the stream ends
    with pytest.raises(grpc.RpcError) as again:
        approvers(service).ResolveApproval(pb.ResolveApprovalRequest(approval_id=approval_id,
                                                                     resolution=pb.RESOLUTION_APPROVE))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "resolved already" in again.value.details()


def test_only_the_approvals_own_task_may_follow_it(service):
    _, approval_id = escalate(service)
    other, _ = escalate(service)
    req = pb.GetExecutionRequest(agent_id=AGENT, task_id=other, approval_id=approval_id)
    assert code(lambda: service.stub.GetExecution(req)) == grpc.StatusCode.PERMISSION_DENIED
    missing = pb.GetExecutionRequest(agent_id=AGENT, task_id=other, approval_id="apr_" + "0" * 32)
    assert code(lambda: service.stub.GetExecution(missing)) == grpc.StatusCode.NOT_FOUND


def test_an_execute_naming_an_approval_is_refused_with_failed_precondition(service):
    task, approval_id = escalate(service)
    args = struct_pb2.Struct()
    args.update(dict(TRANSFER, amount=1))
    with pytest.raises(grpc.RpcError) as e:
        service.stub.Execute(pb.ExecuteRequest(task_id=task, agent_id=AGENT, approval_id=approval_id,
                                               call=pb.ToolCall(name="transfer_funds", args=args)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "another call" in e.value.details()


def test_a_bad_resolution_is_invalid_argument(service):
    _, approval_id = escalate(service)
    assert code(lambda: approvers(service).ResolveApproval(pb.ResolveApprovalRequest(approval_id=approval_id))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: approvers(service).ResolveApproval(pb.ResolveApprovalRequest(
        approval_id=approval_id, resolution=pb.RESOLUTION_REJECT, comment="x" * 1025))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: approvers(service).ListApprovals(pb.ListApprovalsRequest(page_size=501))) \
        == grpc.StatusCode.INVALID_ARGUMENT


def test_a_restart_keeps_pending_approvals_and_their_expiry(tmp_path):
    config = write_config(tmp_path / "svc")
    svc = Service(config)
    try:
        _, approval_id = escalate(svc)
        before = approvers(svc).GetApproval(pb.GetApprovalRequest(approval_id=approval_id)).approval
    finally:
        svc.stop()
    svc = Service(config)
    try:
        after = approvers(svc).GetApproval(pb.GetApprovalRequest(approval_id=approval_id)).approval
        pending = approvers(svc).ListApprovals(pb.ListApprovalsRequest(status=pb.APPROVAL_STATUS_PENDING)).approvals
    finally:
        svc.stop()
    assert after.status == pb.APPROVAL_STATUS_PENDING and after.expires_at == before.expires_at
    assert after.args_digest == before.args_digest and [p.approval_id for p in pending] == [approval_id]
