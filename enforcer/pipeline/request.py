"""Plain request and result types: the pipeline never sees protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from enforcer.audit.log import Appended
from enforcer.audit.records import Principal
from enforcer.policy.decision import Decision

Rpc = Literal["StartTask", "Decide", "Execute"]
# Who is really calling, as the authenticator proved it (never the request's
# say); None only for in-process callers without a transport (tests, CLI).
MaybePrincipal = Principal | None
# unknown: a write tool interrupted mid-run (timeout, cancellation): it may or may not have taken effect.
Status = Literal["succeeded", "blocked", "pending_approval", "failed", "unknown"]


@dataclass(frozen=True)
class StartTaskRequest:
    agent_id: str
    declared_goal: str
    declared_actions: tuple[str, ...]
    principal: MaybePrincipal = None
    # The only resources the task's write actions may touch, by the exact
    # value of each tool's resource_arg; empty: not checked.
    declared_resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenewRequest:
    agent_id: str
    task_id: str
    principal: MaybePrincipal = None


@dataclass(frozen=True)
class CallRequest:
    rpc: Rpc
    task_id: str
    agent_id: str
    tool: str
    args: dict[str, Any]
    untrusted_input_source: bool = False
    triggering_input: str = ""
    idempotency_key: str = ""
    # time.monotonic() at which the caller stops waiting (its RPC deadline),
    # so a cancellation can be logged as a deadline or a client's cancel.
    deadline: float | None = None
    principal: MaybePrincipal = None
    # Execute: the approval a resumed call names (always refused: the service
    # runs approved calls itself); an approved call run by the service: its approval.
    approval_id: str = ""
    # The id the agent knows this call by (its Execute's decision id) when
    # another decision runs it: an approved call run by the service.
    call_id: str = ""
    # The JSON-RPC id of the MCP request this call came in (enforcer.mcp), for the log.
    mcp_request_id: str = ""


@dataclass(frozen=True)
class TaskStarted:
    task_id: str
    expires_at: float
    event_id: str
    appended: Appended | None = None
    token: str = ""  # empty when the pipeline issues no tokens (in-process use)
    token_expires_at: float | None = None


@dataclass(frozen=True)
class TokenRenewed:
    token: str
    token_expires_at: float
    event_id: str


@dataclass(frozen=True)
class Revoked:
    event_id: str
    tasks_revoked: tuple[str, ...]
    approvals_cancelled: int


@dataclass(frozen=True)
class DecideResult:
    decision: Decision
    event_id: str
    appended: Appended | None = None


@dataclass(frozen=True)
class ExecuteResult:
    decision: Decision
    status: Status
    event_id: str
    output: dict[str, Any] | None = None
    error: str = ""
    approval_id: str = ""
    sandbox_id: str = ""
    output_truncated: bool = False
    # Where the entry that ends the call's story landed in the audit log.
    appended: Appended | None = None
    # What the tool returned for its compensation (its output's rollback_token).
    rollback_token: str | None = None
    # Answered from the first call with the same idempotency key: nothing ran.
    duplicate: bool = False
