import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_APPROVE: _ClassVar[Outcome]
    OUTCOME_BLOCK: _ClassVar[Outcome]
    OUTCOME_ESCALATE: _ClassVar[Outcome]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SUCCEEDED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_BLOCKED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PENDING_APPROVAL: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]

class ToolAccess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_ACCESS_UNSPECIFIED: _ClassVar[ToolAccess]
    TOOL_ACCESS_READ: _ClassVar[ToolAccess]
    TOOL_ACCESS_WRITE: _ClassVar[ToolAccess]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_APPROVE: Outcome
OUTCOME_BLOCK: Outcome
OUTCOME_ESCALATE: Outcome
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_SUCCEEDED: ExecutionStatus
EXECUTION_STATUS_BLOCKED: ExecutionStatus
EXECUTION_STATUS_PENDING_APPROVAL: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
TOOL_ACCESS_UNSPECIFIED: ToolAccess
TOOL_ACCESS_READ: ToolAccess
TOOL_ACCESS_WRITE: ToolAccess

class StartTaskRequest(_message.Message):
    __slots__ = ("agent_id", "declared_goal", "declared_actions", "credential", "declared_resources")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECLARED_GOAL_FIELD_NUMBER: _ClassVar[int]
    DECLARED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    DECLARED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    declared_goal: str
    declared_actions: _containers.RepeatedScalarFieldContainer[str]
    credential: str
    declared_resources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., declared_goal: _Optional[str] = ..., declared_actions: _Optional[_Iterable[str]] = ..., credential: _Optional[str] = ..., declared_resources: _Optional[_Iterable[str]] = ...) -> None: ...

class StartTaskResponse(_message.Message):
    __slots__ = ("task_id", "token", "expires_at", "token_expires_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    token: str
    expires_at: _timestamp_pb2.Timestamp
    token_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RenewTaskTokenRequest(_message.Message):
    __slots__ = ("agent_id", "task_id", "credential")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    task_id: str
    credential: str
    def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class RenewTaskTokenResponse(_message.Message):
    __slots__ = ("token", "token_expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., token_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("name", "args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    args: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CallContext(_message.Message):
    __slots__ = ("untrusted_input_source", "triggering_input")
    UNTRUSTED_INPUT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGERING_INPUT_FIELD_NUMBER: _ClassVar[int]
    untrusted_input_source: bool
    triggering_input: str
    def __init__(self, untrusted_input_source: _Optional[bool] = ..., triggering_input: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("outcome", "reason", "risk_score", "policy_revision", "decision_id", "gate", "risk_flags", "approval_ttl_seconds", "rule", "risk_weights", "shadow")
    class RiskWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    RISK_FLAGS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    RISK_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    reason: str
    risk_score: float
    policy_revision: str
    decision_id: str
    gate: str
    risk_flags: _containers.RepeatedScalarFieldContainer[str]
    approval_ttl_seconds: int
    rule: str
    risk_weights: _containers.ScalarMap[str, float]
    shadow: bool
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[str] = ..., risk_score: _Optional[float] = ..., policy_revision: _Optional[str] = ..., decision_id: _Optional[str] = ..., gate: _Optional[str] = ..., risk_flags: _Optional[_Iterable[str]] = ..., approval_ttl_seconds: _Optional[int] = ..., rule: _Optional[str] = ..., risk_weights: _Optional[_Mapping[str, float]] = ..., shadow: _Optional[bool] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("task_id", "agent_id", "call", "context")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent_id: str
    call: ToolCall
    context: CallContext
    def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., call: _Optional[_Union[ToolCall, _Mapping]] = ..., context: _Optional[_Union[CallContext, _Mapping]] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision", "event_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    event_id: str
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("task_id", "agent_id", "call", "context", "idempotency_key")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent_id: str
    call: ToolCall
    context: CallContext
    idempotency_key: str
    def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., call: _Optional[_Union[ToolCall, _Mapping]] = ..., context: _Optional[_Union[CallContext, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("decision", "status", "output", "error", "approval_id", "event_id", "sandbox_id", "output_truncated")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    status: ExecutionStatus
    output: _struct_pb2.Struct
    error: str
    approval_id: str
    event_id: str
    sandbox_id: str
    output_truncated: bool
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., approval_id: _Optional[str] = ..., event_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., output_truncated: _Optional[bool] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "access", "args_schema", "context_rule")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    ARGS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_RULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    access: ToolAccess
    args_schema: _struct_pb2.Struct
    context_rule: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., access: _Optional[_Union[ToolAccess, str]] = ..., args_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context_rule: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools", "policy_revision")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    policy_revision: str
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., policy_revision: _Optional[str] = ...) -> None: ...

class GetAgentPermissionsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class GetAgentPermissionsResponse(_message.Message):
    __slots__ = ("agent_id", "allowed_actions", "blocked_actions", "context_rules", "max_tool_calls_per_run", "auto_approve_threshold", "token_ttl_seconds", "credential_scope", "shadow", "policy_revision")
    class ContextRulesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_RULES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_PER_RUN_FIELD_NUMBER: _ClassVar[int]
    AUTO_APPROVE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    allowed_actions: _containers.RepeatedScalarFieldContainer[str]
    blocked_actions: _containers.RepeatedScalarFieldContainer[str]
    context_rules: _containers.ScalarMap[str, str]
    max_tool_calls_per_run: int
    auto_approve_threshold: float
    token_ttl_seconds: int
    credential_scope: _containers.RepeatedScalarFieldContainer[str]
    shadow: bool
    policy_revision: str
    def __init__(self, agent_id: _Optional[str] = ..., allowed_actions: _Optional[_Iterable[str]] = ..., blocked_actions: _Optional[_Iterable[str]] = ..., context_rules: _Optional[_Mapping[str, str]] = ..., max_tool_calls_per_run: _Optional[int] = ..., auto_approve_threshold: _Optional[float] = ..., token_ttl_seconds: _Optional[int] = ..., credential_scope: _Optional[_Iterable[str]] = ..., shadow: _Optional[bool] = ..., policy_revision: _Optional[str] = ...) -> None: ...

class RevokeTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTaskResponse(_message.Message):
    __slots__ = ("event_id", "approvals_cancelled")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    approvals_cancelled: int
    def __init__(self, event_id: _Optional[str] = ..., approvals_cancelled: _Optional[int] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ("agent_id", "reason")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    reason: str
    def __init__(self, agent_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeAgentResponse(_message.Message):
    __slots__ = ("event_id", "tasks_revoked", "approvals_cancelled")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tasks_revoked: int
    approvals_cancelled: int
    def __init__(self, event_id: _Optional[str] = ..., tasks_revoked: _Optional[int] = ..., approvals_cancelled: _Optional[int] = ...) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("applied", "old_revision", "new_revision", "message")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    OLD_REVISION_FIELD_NUMBER: _ClassVar[int]
    NEW_REVISION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    old_revision: str
    new_revision: str
    message: str
    def __init__(self, applied: _Optional[bool] = ..., old_revision: _Optional[str] = ..., new_revision: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetPolicyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyStatusResponse(_message.Message):
    __slots__ = ("policy_revision", "engine", "shadow_all", "shadow_agents", "last_reload", "last_reload_at")
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ALL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_AGENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_AT_FIELD_NUMBER: _ClassVar[int]
    policy_revision: str
    engine: str
    shadow_all: bool
    shadow_agents: _containers.RepeatedScalarFieldContainer[str]
    last_reload: ReloadPolicyResponse
    last_reload_at: _timestamp_pb2.Timestamp
    def __init__(self, policy_revision: _Optional[str] = ..., engine: _Optional[str] = ..., shadow_all: _Optional[bool] = ..., shadow_agents: _Optional[_Iterable[str]] = ..., last_reload: _Optional[_Union[ReloadPolicyResponse, _Mapping]] = ..., last_reload_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
