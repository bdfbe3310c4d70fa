"""Every kind of audit record, defined once.

Each kind is a frozen dataclass over one shared header. Writers build them
(no validation on the hot path: the code that builds them is ours); readers
(metrics, replay, the audit CLI, the verifier's display) get them back through
`parse_record`, which validates the shape strictly as the data enters (an
unknown kind, a missing or extra field, a wrong type is a RecordError).
`to_dict` is the one serialisation; what is signed is its RFC 8785 form
(enforcer.audit.canonical), never a wire format.

Schema versions. Records written before the typed records (schema 1) carry
no `schema` and no `principal` field; they parse into the same classes with
schema=1 and principal=None, so an old log reads and verifies unchanged
(tests/fixtures/logs). New records carry schema=2.

The call-related kinds (task_started, decision, execution, rejected,
policy_reload) also carry every field of the seed's ActionLog (CallFields),
so a reader of the log finds them in each such entry.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from enforcer.errors import RecordError

SCHEMA_VERSION = 2


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def timestamp(now: float) -> str:
    """RFC 3339 UTC with microseconds, the log's one time format."""
    return datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


_STRICT = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is really calling: authenticated, never taken from the request."""

    __pydantic_config__ = _STRICT

    kind: Literal["agent", "approver", "admin", "service", "anonymous"]
    id: str
    # How it proved it: the API key's id, or the client certificate's
    # fingerprint ("sha256:..."); with a task token, also the token's id.
    key_id: str | None = None
    cert_fingerprint: str | None = None
    token_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "key_id": self.key_id,
                "cert_fingerprint": self.cert_fingerprint, "token_id": self.token_id}


@dataclass(frozen=True, kw_only=True)
class Header:
    """What every record has. `policy_applied` is the policy revision in
    force (the seed's name for it); empty where no policy applies."""

    __pydantic_config__ = _STRICT
    KIND: ClassVar[str] = ""

    event_id: str = field(default_factory=lambda: new_id("evt"))
    timestamp: str
    agent_id: str = ""
    task_id: str = ""
    principal: Principal | None = None
    policy_applied: str = ""
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.KIND}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Principal):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class CallFields(Header):
    """The seed's ActionLog fields, present in every call-related record."""

    rpc: str
    action_name: str = ""
    input_payload: dict[str, Any] = field(default_factory=dict)
    risk_score: float | None = None
    outcome: str
    reason: str = ""
    latency_ms: float = 0.0
    decision_id: str | None = None
    sandbox_id: str | None = None
    hitl_approval_id: str | None = None
    rollback_token: str | None = None


@dataclass(frozen=True, kw_only=True)
class TaskStarted(CallFields):
    KIND: ClassVar[str] = "task_started"
    kind: Literal["task_started"] = "task_started"
    # The task token issued with the task (its id, never the token).
    token_id: str | None = None
    token_expires_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class TokenRenewed(CallFields):
    """A new task token for a live task (RenewTaskToken)."""

    KIND: ClassVar[str] = "token_renewed"
    kind: Literal["token_renewed"] = "token_renewed"
    token_id: str
    token_expires_at: str


@dataclass(frozen=True, kw_only=True)
class AuthRefused(CallFields):
    """A call refused by authentication, before the pipeline: no valid
    proof of identity (UNAUTHENTICATED), or a proven identity that may not
    make this call (PERMISSION_DENIED). agent_id and task_id are what the
    request claimed; the header's principal is set only when one was proven.
    Never the token or the key."""

    KIND: ClassVar[str] = "auth_refused"
    kind: Literal["auth_refused"] = "auth_refused"
    # The stable label (aecl_auth_refusals_total{reason}), e.g. expired.
    refusal: str
    status: Literal["UNAUTHENTICATED", "PERMISSION_DENIED"]
    peer: str = ""
    key_id: str | None = None
    token_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RevocationRecord(CallFields):
    """A task or an agent revoked by an administrator (the header's
    principal). For an agent: every task, token, key and certificate it held
    at `revoked_at`."""

    KIND: ClassVar[str] = "revocation"
    kind: Literal["revocation"] = "revocation"
    target: Literal["task", "agent"]
    target_id: str
    revoked_at: str
    tasks_revoked: tuple[str, ...] = ()
    approvals_cancelled: int = 0


@dataclass(frozen=True, kw_only=True)
class DecisionRecord(CallFields):
    """A policy decision (Decide dry run or Execute), with its explanation and
    the complete policy input, so `aecl policy replay` can re-decide it."""

    KIND: ClassVar[str] = "decision"
    kind: Literal["decision"] = "decision"
    gate: str
    rule: str
    risk_flags: tuple[str, ...] = ()
    risk_weights: dict[str, float] = field(default_factory=dict)
    approval_ttl_seconds: int = 0
    shadow: bool = False
    policy_input: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    # False for a shadow-mode Execute whose verdict was not enforced.
    enforced: bool = True


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord(CallFields):
    """What happened when an approved call ran (or could not run)."""

    KIND: ClassVar[str] = "execution"
    kind: Literal["execution"] = "execution"
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_truncated: bool = False
    duration_ms: float = 0.0
    resource_usage: dict[str, Any] = field(default_factory=dict)
    limits_hit: tuple[str, ...] = ()
    # Why it ended when the tool did not finish on its own: client_cancelled,
    # deadline, shutdown, sandbox_unavailable, store_failed, audit_failed,
    # internal_error, upstream_unavailable, or "" for a tool that ran to its own end.
    cause: str = ""
    # An MCP tool (forwarded to its upstream server): sha256 of the result's
    # canonical JSON, so the log binds what the agent was given.
    output_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectorRequestRecord(CallFields):
    """One request a sandboxed tool made through a connector, forwarded or
    refused by the host-side proxy; linked to its execution by decision_id
    and sandbox_id. Never the credential the connector injected."""

    KIND: ClassVar[str] = "connector_request"
    kind: Literal["connector_request"] = "connector_request"
    connector: str
    method: str
    path: str
    status: int
    upstream_status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    # Why the proxy refused it (not_allowed, unknown_connector, ...); None when forwarded.
    refused: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalRecord(CallFields):
    """An approval changed status: a human resolved it (approved or
    rejected; the principal is the approver), it expired, it was cancelled
    (revocation), or its approved call could not start (failed). The
    escalation itself is the `decision` entry, and the run that follows an
    approval is a `decision` (made again, with the approval in the policy
    input) and an `execution` entry; all carry hitl_approval_id. The store's
    compare-and-swap from `from_status` commits after this entry."""

    KIND: ClassVar[str] = "approval"
    kind: Literal["approval"] = "approval"
    transition: Literal["approved", "rejected", "expired", "cancelled", "failed"]
    from_status: str
    args_digest: str
    expires_at: str
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class DuplicateRecord(CallFields):
    """An Execute answered from the idempotency record of an earlier call
    with the same key and arguments: nothing ran. `original_decision_id`
    and `original_event_id` point to the first call's entries."""

    KIND: ClassVar[str] = "duplicate"
    kind: Literal["duplicate"] = "duplicate"
    idempotency_key: str
    args_digest: str
    original_decision_id: str
    original_event_id: str = ""


@dataclass(frozen=True, kw_only=True)
class RollbackRecord(CallFields):
    """One step of a rollback: the execution undone (`original_decision_id`,
    its tool in action_name) and how it ended (outcome: success,
    irreversible, no_compensating_action, rollback_failed,
    already_rolled_back, pending_approval). The compensation's own decision
    and executions are `decision`/`execution` entries with rpc Rollback."""

    KIND: ClassVar[str] = "rollback"
    kind: Literal["rollback"] = "rollback"
    original_decision_id: str
    compensation_tool: str = ""
    attempts: int = 0
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class NotificationRecord(CallFields):
    """One delivery attempt of an approval's notification (the webhook):
    its target without any secret, the attempt number, what came back."""

    KIND: ClassVar[str] = "notification"
    kind: Literal["notification"] = "notification"
    channel: Literal["webhook"] = "webhook"
    url: str
    attempt: int
    status_code: int | None = None
    delivered: bool = False
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class RejectedRecord(CallFields):
    """A request refused before any decision: bad input, unknown task, a
    foreign caller, an unavailable dependency. `error_code` is the stable
    code of the error (enforcer.errors)."""

    KIND: ClassVar[str] = "rejected"
    kind: Literal["rejected"] = "rejected"
    error_class: str
    error_code: str = ""


@dataclass(frozen=True, kw_only=True)
class PolicyReload(CallFields):
    KIND: ClassVar[str] = "policy_reload"
    kind: Literal["policy_reload"] = "policy_reload"
    old_revision: str
    new_revision: str
    # What changed: rego, data, agents, registry, risk, mode.
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CheckpointRecord(Header):
    """The writer's signed tree head (a C2SP signed note), as a log entry."""

    KIND: ClassVar[str] = "checkpoint"
    kind: Literal["checkpoint"] = "checkpoint"
    tree_size: int
    root: str  # base64 of the RFC 6962 root, as in the note
    note: str


@dataclass(frozen=True, kw_only=True)
class KeyTransitionRecord(Header):
    """The hand-over from the outgoing signing key to the incoming one."""

    KIND: ClassVar[str] = "key_transition"
    kind: Literal["key_transition"] = "key_transition"
    old_kid: str
    new_kid: str
    new_public_key: str
    old_signature: str


@dataclass(frozen=True, kw_only=True)
class ServiceRecord(Header):
    """The service started or stopped: a restart leaves a trace, with what
    was running (policy_applied in the header is the revision in force)."""

    KIND: ClassVar[str] = "service"
    kind: Literal["service"] = "service"
    event: Literal["start", "stop"]
    outcome: Literal["started", "stopped"]
    reason: str = ""
    version: str
    config_digest: str  # sha256 of the validated configuration
    engine: str
    listen: str = ""
    pid: int = 0


Record = (TaskStarted | TokenRenewed | DecisionRecord | ExecutionRecord | ConnectorRequestRecord | RejectedRecord
          | AuthRefused | RevocationRecord | ApprovalRecord | NotificationRecord | DuplicateRecord | RollbackRecord
          | PolicyReload | CheckpointRecord | KeyTransitionRecord | ServiceRecord)
KINDS: dict[str, type] = {cls.KIND: cls for cls in
                          (TaskStarted, TokenRenewed, DecisionRecord, ExecutionRecord, ConnectorRequestRecord,
                           RejectedRecord, AuthRefused, RevocationRecord, ApprovalRecord, NotificationRecord,
                           DuplicateRecord, RollbackRecord, PolicyReload, CheckpointRecord, KeyTransitionRecord, ServiceRecord)}
CALL_KINDS = frozenset({"task_started", "token_renewed", "decision", "execution", "connector_request", "rejected",
                        "auth_refused", "revocation", "approval", "notification", "duplicate", "rollback",
                        "policy_reload"})


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "kind")


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def parse_record(raw: Any) -> Record:
    """A record as read from a log, validated against its kind's definition."""
    if not isinstance(raw, dict):
        raise RecordError(f"a record must be a JSON object, not {type(raw).__name__}")
    kind = raw.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RecordError(f"unknown record kind {kind!r}; known: {sorted(KINDS)}")
    doc = raw if "schema" in raw else {**raw, "schema": 1}
    try:
        # JSON mode: strict types as JSON has them (an array is a tuple field,
        # an integer is a float field), nothing coerced from strings.
        return _adapter(cls).validate_json(json.dumps(doc, allow_nan=False))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RecordError(f"{kind} record, field '{loc}': {first['msg']}") from None
    except ValueError as e:  # a non-finite number cannot be JSON
        raise RecordError(f"{kind} record: {e}") from None
