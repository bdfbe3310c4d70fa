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
    EXECUTION_STATUS_UNKNOWN: _ClassVar[ExecutionStatus]

class ToolAccess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_ACCESS_UNSPECIFIED: _ClassVar[ToolAccess]
    TOOL_ACCESS_READ: _ClassVar[ToolAccess]
    TOOL_ACCESS_WRITE: _ClassVar[ToolAccess]

class ApprovalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_STATUS_UNSPECIFIED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_PENDING: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_APPROVED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_REJECTED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_EXPIRED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_CANCELLED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_EXECUTING: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_EXECUTED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_FAILED: _ClassVar[ApprovalStatus]

class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_UNSPECIFIED: _ClassVar[Resolution]
    RESOLUTION_APPROVE: _ClassVar[Resolution]
    RESOLUTION_REJECT: _ClassVar[Resolution]

class RollbackStepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLBACK_STEP_STATUS_UNSPECIFIED: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_SUCCESS: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_IRREVERSIBLE: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_NO_COMPENSATING_ACTION: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_ROLLBACK_FAILED: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_ALREADY_ROLLED_BACK: _ClassVar[RollbackStepStatus]
    ROLLBACK_STEP_STATUS_PENDING_APPROVAL: _ClassVar[RollbackStepStatus]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_APPROVE: Outcome
OUTCOME_BLOCK: Outcome
OUTCOME_ESCALATE: Outcome
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_SUCCEEDED: ExecutionStatus
EXECUTION_STATUS_BLOCKED: ExecutionStatus
EXECUTION_STATUS_PENDING_APPROVAL: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_UNKNOWN: ExecutionStatus
TOOL_ACCESS_UNSPECIFIED: ToolAccess
TOOL_ACCESS_READ: ToolAccess
TOOL_ACCESS_WRITE: ToolAccess
APPROVAL_STATUS_UNSPECIFIED: ApprovalStatus
APPROVAL_STATUS_PENDING: ApprovalStatus
APPROVAL_STATUS_APPROVED: ApprovalStatus
APPROVAL_STATUS_REJECTED: ApprovalStatus
APPROVAL_STATUS_EXPIRED: ApprovalStatus
APPROVAL_STATUS_CANCELLED: ApprovalStatus
APPROVAL_STATUS_EXECUTING: ApprovalStatus
APPROVAL_STATUS_EXECUTED: ApprovalStatus
APPROVAL_STATUS_FAILED: ApprovalStatus
RESOLUTION_UNSPECIFIED: Resolution
RESOLUTION_APPROVE: Resolution
RESOLUTION_REJECT: Resolution
ROLLBACK_STEP_STATUS_UNSPECIFIED: RollbackStepStatus
ROLLBACK_STEP_STATUS_SUCCESS: RollbackStepStatus
ROLLBACK_STEP_STATUS_IRREVERSIBLE: RollbackStepStatus
ROLLBACK_STEP_STATUS_NO_COMPENSATING_ACTION: RollbackStepStatus
ROLLBACK_STEP_STATUS_ROLLBACK_FAILED: RollbackStepStatus
ROLLBACK_STEP_STATUS_ALREADY_ROLLED_BACK: RollbackStepStatus
ROLLBACK_STEP_STATUS_PENDING_APPROVAL: RollbackStepStatus

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
    __slots__ = ("task_id", "agent_id", "call", "context", "idempotency_key", "approval_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    agent_id: str
    call: ToolCall
    context: CallContext
    idempotency_key: str
    approval_id: str
    def __init__(self, task_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., call: _Optional[_Union[ToolCall, _Mapping]] = ..., context: _Optional[_Union[CallContext, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., approval_id: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("decision", "status", "output", "error", "approval_id", "event_id", "sandbox_id", "output_truncated", "rollback_token", "duplicate")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    status: ExecutionStatus
    output: _struct_pb2.Struct
    error: str
    approval_id: str
    event_id: str
    sandbox_id: str
    output_truncated: bool
    rollback_token: str
    duplicate: bool
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., approval_id: _Optional[str] = ..., event_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., rollback_token: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

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

class Principal(_message.Message):
    __slots__ = ("kind", "id", "key_id", "cert_fingerprint")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CERT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    key_id: str
    cert_fingerprint: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., key_id: _Optional[str] = ..., cert_fingerprint: _Optional[str] = ...) -> None: ...

class HistoryCall(_message.Message):
    __slots__ = ("tool", "outcome", "amount", "resource", "at")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    tool: str
    outcome: str
    amount: _struct_pb2.Value
    resource: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, tool: _Optional[str] = ..., outcome: _Optional[str] = ..., amount: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., resource: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("status", "output", "error", "sandbox_id", "output_truncated", "decision", "event_id", "finished_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    status: ExecutionStatus
    output: _struct_pb2.Struct
    error: str
    sandbox_id: str
    output_truncated: bool
    decision: Decision
    event_id: str
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[ExecutionStatus, str]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., event_id: _Optional[str] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("approval_id", "status", "agent_id", "task_id", "tool", "args", "args_digest", "principal", "reason", "gate", "rule", "risk_score", "risk_flags", "risk_weights", "policy_revision", "decision_id", "untrusted_input_source", "triggering_input", "declared_goal", "history", "created_at", "expires_at", "approver", "comment", "resolved_at", "result", "version", "idempotency_key", "kind", "compensation_of")
    class RiskWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ARGS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    RISK_FLAGS_FIELD_NUMBER: _ClassVar[int]
    RISK_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    UNTRUSTED_INPUT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRIGGERING_INPUT_FIELD_NUMBER: _ClassVar[int]
    DECLARED_GOAL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_OF_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    status: ApprovalStatus
    agent_id: str
    task_id: str
    tool: str
    args: _struct_pb2.Struct
    args_digest: str
    principal: Principal
    reason: str
    gate: str
    rule: str
    risk_score: float
    risk_flags: _containers.RepeatedScalarFieldContainer[str]
    risk_weights: _containers.ScalarMap[str, float]
    policy_revision: str
    decision_id: str
    untrusted_input_source: bool
    triggering_input: str
    declared_goal: str
    history: _containers.RepeatedCompositeFieldContainer[HistoryCall]
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    approver: Principal
    comment: str
    resolved_at: _timestamp_pb2.Timestamp
    result: ExecutionResult
    version: int
    idempotency_key: str
    kind: str
    compensation_of: str
    def __init__(self, approval_id: _Optional[str] = ..., status: _Optional[_Union[ApprovalStatus, str]] = ..., agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., tool: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., args_digest: _Optional[str] = ..., principal: _Optional[_Union[Principal, _Mapping]] = ..., reason: _Optional[str] = ..., gate: _Optional[str] = ..., rule: _Optional[str] = ..., risk_score: _Optional[float] = ..., risk_flags: _Optional[_Iterable[str]] = ..., risk_weights: _Optional[_Mapping[str, float]] = ..., policy_revision: _Optional[str] = ..., decision_id: _Optional[str] = ..., untrusted_input_source: _Optional[bool] = ..., triggering_input: _Optional[str] = ..., declared_goal: _Optional[str] = ..., history: _Optional[_Iterable[_Union[HistoryCall, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approver: _Optional[_Union[Principal, _Mapping]] = ..., comment: _Optional[str] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result: _Optional[_Union[ExecutionResult, _Mapping]] = ..., version: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., kind: _Optional[str] = ..., compensation_of: _Optional[str] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("status", "agent_id", "task_id", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: ApprovalStatus
    agent_id: str
    task_id: str
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[ApprovalStatus, str]] = ..., agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals", "next_page_token")
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    next_page_token: str
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class GetApprovalResponse(_message.Message):
    __slots__ = ("approval",)
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class ResolveApprovalRequest(_message.Message):
    __slots__ = ("approval_id", "resolution", "comment")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    resolution: Resolution
    comment: str
    def __init__(self, approval_id: _Optional[str] = ..., resolution: _Optional[_Union[Resolution, str]] = ..., comment: _Optional[str] = ...) -> None: ...

class ResolveApprovalResponse(_message.Message):
    __slots__ = ("approval", "event_id")
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    event_id: str
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class WatchApprovalsRequest(_message.Message):
    __slots__ = ("include_pending",)
    INCLUDE_PENDING_FIELD_NUMBER: _ClassVar[int]
    include_pending: bool
    def __init__(self, include_pending: _Optional[bool] = ...) -> None: ...

class WatchApprovalsResponse(_message.Message):
    __slots__ = ("approval",)
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("agent_id", "task_id", "approval_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    task_id: str
    approval_id: str
    def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., approval_id: _Optional[str] = ...) -> None: ...

class GetExecutionResponse(_message.Message):
    __slots__ = ("status", "result", "comment", "expires_at", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: ApprovalStatus
    result: ExecutionResult
    comment: str
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, status: _Optional[_Union[ApprovalStatus, str]] = ..., result: _Optional[_Union[ExecutionResult, _Mapping]] = ..., comment: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class WaitForExecutionRequest(_message.Message):
    __slots__ = ("agent_id", "task_id", "approval_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    task_id: str
    approval_id: str
    def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., approval_id: _Optional[str] = ...) -> None: ...

class WaitForExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: GetExecutionResponse
    def __init__(self, execution: _Optional[_Union[GetExecutionResponse, _Mapping]] = ...) -> None: ...

class RollbackStep(_message.Message):
    __slots__ = ("decision_id", "tool", "status", "compensation_tool", "output", "error", "attempts", "approval_id", "event_id")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_TOOL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    tool: str
    status: RollbackStepStatus
    compensation_tool: str
    output: _struct_pb2.Struct
    error: str
    attempts: int
    approval_id: str
    event_id: str
    def __init__(self, decision_id: _Optional[str] = ..., tool: _Optional[str] = ..., status: _Optional[_Union[RollbackStepStatus, str]] = ..., compensation_tool: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., approval_id: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("agent_id", "task_id", "decision_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    task_id: str
    decision_id: str
    def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: RollbackStep
    def __init__(self, step: _Optional[_Union[RollbackStep, _Mapping]] = ...) -> None: ...

class RollbackTaskRequest(_message.Message):
    __slots__ = ("agent_id", "task_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    task_id: str
    def __init__(self, agent_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class RollbackTaskResponse(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[RollbackStep]
    def __init__(self, steps: _Optional[_Iterable[_Union[RollbackStep, _Mapping]]] = ...) -> None: ...
