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
from enforcer.policy.decision import Decision
from enforcer.policy.reload import ReloadResult

_OUTCOMES = {"approve": pb.OUTCOME_APPROVE, "block": pb.OUTCOME_BLOCK, "escalate": pb.OUTCOME_ESCALATE}
_STATUSES = {
    "succeeded": pb.EXECUTION_STATUS_SUCCEEDED,
    "blocked": pb.EXECUTION_STATUS_BLOCKED,
    "pending_approval": pb.EXECUTION_STATUS_PENDING_APPROVAL,
    "failed": pb.EXECUTION_STATUS_FAILED,
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
