"""Protobuf <-> plain Python at the wire boundary.

Args arrive as google.protobuf.Struct, which is untrusted: conversion walks
it once, enforcing depth, finite numbers and total size, and names the exact
field that fails.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from enforcer.audit.records import Principal
from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer.config import LimitsConfig
from enforcer.errors import InvalidRequest
from enforcer.manifests import AgentManifest, ToolSpec
from enforcer.pipeline.request import CallRequest, DecideResult, ExecuteResult, StartTaskRequest
from enforcer.state.store import Approval
from enforcer.policy.decision import Decision
from enforcer.policy.reload import ReloadResult

_OUTCOMES = {"approve": pb.OUTCOME_APPROVE, "block": pb.OUTCOME_BLOCK, "escalate": pb.OUTCOME_ESCALATE}
_STATUSES = {
    "succeeded": pb.EXECUTION_STATUS_SUCCEEDED,
    "blocked": pb.EXECUTION_STATUS_BLOCKED,
    "pending_approval": pb.EXECUTION_STATUS_PENDING_APPROVAL,
    "failed": pb.EXECUTION_STATUS_FAILED,
    "unknown": pb.EXECUTION_STATUS_UNKNOWN,
}
_ACCESS = {"read": pb.TOOL_ACCESS_READ, "write": pb.TOOL_ACCESS_WRITE}
_MAX_SAFE_INT = 2**53 - 1  # RFC 8785 (I-JSON) safe integer range


def struct_to_dict(struct: struct_pb2.Struct, limits: LimitsConfig, field: str) -> dict[str, Any]:
    size = struct.ByteSize()
    if size > limits.max_args_bytes:
        raise InvalidRequest(field, f"is {size} bytes, more than the limit of {limits.max_args_bytes}")
    return {k: _value(v, limits.max_args_depth, 1, f"{field}.{k}") for k, v in struct.fields.items()}


def _value(v: struct_pb2.Value, max_depth: int, depth: int, path: str) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise InvalidRequest(path, "numbers must be finite (NaN and Infinity are refused)")
        return int(n) if n.is_integer() and abs(n) <= _MAX_SAFE_INT else n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "null_value" or kind is None:
        return None
    if depth >= max_depth:
        raise InvalidRequest(path, f"nested deeper than {max_depth} levels")
    if kind == "struct_value":
        return {k: _value(x, max_depth, depth + 1, f"{path}.{k}") for k, x in v.struct_value.fields.items()}
    return [_value(x, max_depth, depth + 1, f"{path}[{i}]") for i, x in enumerate(v.list_value.values)]


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def start_task_request(msg: pb.StartTaskRequest, principal: Principal | None = None) -> StartTaskRequest:
    # msg.credential stops here: it was checked by the authenticator and is never logged.
    return StartTaskRequest(
        agent_id=msg.agent_id,
        declared_goal=msg.declared_goal,
        declared_actions=tuple(msg.declared_actions),
        declared_resources=tuple(msg.declared_resources),
        principal=principal,
    )


def call_request(rpc: str, msg: pb.DecideRequest | pb.ExecuteRequest, limits: LimitsConfig, *,
                 deadline: float | None = None, principal: Principal | None = None) -> CallRequest:
    if not msg.HasField("call"):
        raise InvalidRequest("call", "is required")
    return CallRequest(
        rpc=rpc,  # type: ignore[arg-type]
        task_id=msg.task_id,
        agent_id=msg.agent_id,
        tool=msg.call.name,
        args=struct_to_dict(msg.call.args, limits, "call.args"),
        untrusted_input_source=msg.context.untrusted_input_source,
        triggering_input=msg.context.triggering_input,
        idempotency_key=getattr(msg, "idempotency_key", ""),
        deadline=deadline,
        principal=principal,
        approval_id=getattr(msg, "approval_id", ""),
    )


def decision_message(d: Decision) -> pb.Decision:
    fields = d.explanation()
    fields["outcome"] = _OUTCOMES[d.outcome]
    return pb.Decision(**fields)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def decide_response(r: DecideResult) -> pb.DecideResponse:
    return pb.DecideResponse(decision=decision_message(r.decision), event_id=r.event_id)


def execute_response(r: ExecuteResult) -> pb.ExecuteResponse:
    resp = pb.ExecuteResponse(
        decision=decision_message(r.decision),
        status=_STATUSES[r.status],
        error=r.error,
        approval_id=r.approval_id,
        event_id=r.event_id,
        sandbox_id=r.sandbox_id,
        output_truncated=r.output_truncated,
        rollback_token=r.rollback_token or "",
        duplicate=r.duplicate,
    )
    if r.output is not None:
        resp.output.CopyFrom(dict_to_struct(r.output))
    return resp


def reload_response(r: ReloadResult) -> pb.ReloadPolicyResponse:
    return pb.ReloadPolicyResponse(applied=r.applied, old_revision=r.old_revision,
                                   new_revision=r.new_revision, message=r.message)


def tool_message(name: str, spec: ToolSpec, context_rule: str | None) -> pb.Tool:
    tool = pb.Tool(name=name, description=spec.description, access=_ACCESS[spec.access],
                   context_rule=context_rule or "")
    if spec.args_schema is not None:
        tool.args_schema.CopyFrom(dict_to_struct(spec.args_schema))
    return tool


def list_tools_response(tools: list[tuple[str, ToolSpec, str | None]], revision: str) -> pb.ListToolsResponse:
    return pb.ListToolsResponse(tools=[tool_message(*t) for t in tools], policy_revision=revision)


def agent_permissions_response(m: AgentManifest, *, shadow: bool, revision: str) -> pb.GetAgentPermissionsResponse:
    return pb.GetAgentPermissionsResponse(
        agent_id=m.agent_id, allowed_actions=m.allowed_actions, blocked_actions=m.blocked_actions,
        context_rules=m.context_rules, max_tool_calls_per_run=m.max_tool_calls_per_run,
        auto_approve_threshold=m.auto_approve_threshold, token_ttl_seconds=m.token_ttl_seconds,
        credential_scope=m.credential_scope, shadow=shadow, policy_revision=revision,
    )


# -- approvals ---------------------------------------------------------------

APPROVAL_STATUSES = {
    "pending": pb.APPROVAL_STATUS_PENDING, "approved": pb.APPROVAL_STATUS_APPROVED,
    "rejected": pb.APPROVAL_STATUS_REJECTED, "expired": pb.APPROVAL_STATUS_EXPIRED,
    "cancelled": pb.APPROVAL_STATUS_CANCELLED, "executing": pb.APPROVAL_STATUS_EXECUTING,
    "executed": pb.APPROVAL_STATUS_EXECUTED, "failed": pb.APPROVAL_STATUS_FAILED,
}
STATUS_NAMES = {v: k for k, v in APPROVAL_STATUSES.items()}


def principal_message(p: Principal | None) -> pb.Principal | None:
    if p is None:
        return None
    return pb.Principal(kind=p.kind, id=p.id, key_id=p.key_id or "", cert_fingerprint=p.cert_fingerprint or "")


def _history_call(h: dict[str, Any]) -> pb.HistoryCall:
    msg = pb.HistoryCall(tool=h.get("tool", ""), outcome=h.get("outcome", ""), resource=h.get("resource") or "",
                         at=timestamp(h.get("at") or 0))
    if h.get("amount") is not None:
        msg.amount.number_value = float(h["amount"])
    return msg


def _decision_from_explanation(d: dict[str, Any]) -> pb.Decision:
    fields = dict(d)
    fields["outcome"] = _OUTCOMES.get(fields.get("outcome", ""), pb.OUTCOME_UNSPECIFIED)
    return pb.Decision(**fields)


def execution_result_message(r: dict[str, Any]) -> pb.ExecutionResult:
    msg = pb.ExecutionResult(status=_STATUSES.get(r.get("status", ""), pb.EXECUTION_STATUS_FAILED),
                             error=r.get("error") or "", sandbox_id=r.get("sandbox_id") or "",
                             output_truncated=bool(r.get("output_truncated")), event_id=r.get("event_id") or "")
    if r.get("output") is not None:
        msg.output.CopyFrom(dict_to_struct(r["output"]))
    if r.get("decision"):
        msg.decision.CopyFrom(_decision_from_explanation(r["decision"]))
    if r.get("finished_at") is not None:
        msg.finished_at.CopyFrom(timestamp(r["finished_at"]))
    return msg


def approval_message(a: Approval) -> pb.Approval:
    msg = pb.Approval(
        approval_id=a.approval_id, status=APPROVAL_STATUSES[a.status], agent_id=a.agent_id, task_id=a.task_id,
        tool=a.action_name, args=dict_to_struct(a.args), args_digest=a.args_digest,
        principal=principal_message(a.principal), reason=a.reason, gate=a.gate, rule=a.rule,
        risk_score=a.risk_score, risk_flags=list(a.risk_flags), risk_weights=dict(a.risk_weights),
        policy_revision=a.policy_revision, decision_id=a.decision_id,
        untrusted_input_source=a.untrusted_input_source, triggering_input=a.triggering_input,
        declared_goal=a.declared_goal, history=[_history_call(h) for h in a.history],
        created_at=timestamp(a.created_at), expires_at=timestamp(a.expires_at),
        approver=principal_message(a.approver), comment=a.comment, version=a.version,
        idempotency_key=a.idempotency_key, kind=a.kind, compensation_of=a.compensation_of,
    )
    if a.resolved_at is not None:
        msg.resolved_at.CopyFrom(timestamp(a.resolved_at))
    if a.result is not None:
        msg.result.CopyFrom(execution_result_message(a.result))
    return msg


def execution_response(a: Approval) -> pb.GetExecutionResponse:
    """What the agent sees of its escalated call (not the approver's identity)."""
    msg = pb.GetExecutionResponse(status=APPROVAL_STATUSES[a.status], comment=a.comment,
                                  expires_at=timestamp(a.expires_at), reason=a.reason)
    if a.result is not None:
        msg.result.CopyFrom(execution_result_message(a.result))
    return msg


STEP_STATUSES = {
    "success": pb.ROLLBACK_STEP_STATUS_SUCCESS, "irreversible": pb.ROLLBACK_STEP_STATUS_IRREVERSIBLE,
    "no_compensating_action": pb.ROLLBACK_STEP_STATUS_NO_COMPENSATING_ACTION,
    "rollback_failed": pb.ROLLBACK_STEP_STATUS_ROLLBACK_FAILED,
    "already_rolled_back": pb.ROLLBACK_STEP_STATUS_ALREADY_ROLLED_BACK,
    "pending_approval": pb.ROLLBACK_STEP_STATUS_PENDING_APPROVAL,
}


def rollback_step(s) -> pb.RollbackStep:
    msg = pb.RollbackStep(decision_id=s.decision_id, tool=s.tool, status=STEP_STATUSES[s.status],
                          compensation_tool=s.compensation_tool, error=s.error, attempts=s.attempts,
                          approval_id=s.approval_id, event_id=s.event_id)
    if s.output is not None:
        msg.output.CopyFrom(dict_to_struct(s.output))
    return msg
