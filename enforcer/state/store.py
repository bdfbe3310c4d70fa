"""The state-store interface: asynchronous, with explicit transactions and
typed results. SQLite (enforcer.state.sqlite) is the embedded default;
PostgreSQL comes later behind the same interface, so the SQL stays portable.
Every implementation must pass tests/state/test_store_contract.py.

Ordering against the audit log. Nothing may exist in the store that the log
does not explain, so every state change is made inside a transaction that
commits only after the audit entry explaining it is durable, and rolls back
when that append fails:

  state change              explained by the entry        commit after
  task created              task_started                  its append
  call claimed (budget)     the call's decision           the decision's append
  call recorded (history)   the call's decision           the decision's append (the claim's transaction)
  approval created          the escalating decision       the decision's append
  approval transition       an `approval` entry           its append (a compare-and-swap on
    (resolved, expired,       (hitl_approval_id set)        the status the entry names as `from`)
     cancelled, executing,
     executed, failed)
  (next issues)
  idempotency key claimed   the call's decision           the decision's append
  idempotency result saved  the call's execution          its append (or the block/escalation's)
  compensation registered   the call's decision           the decision's append
  compensation outcome      the call's execution          its append
  rollback step status      a `rollback` entry            its append (a compare-and-swap)
  task / agent revoked      revocation                    its append

If the commit itself fails after the append, the log explains something the
store lacks (never the reverse); the pipeline then logs the failure and
nothing runs.

A task's history (the `calls` the policy input carries as task.history) is
read and appended inside the transaction that claims the call: transactions
are serialised, so two concurrent calls of one task never decide on the same
history, and a Decide (dry run) reads only committed calls and adds none.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from enforcer.audit.records import Principal
from enforcer.errors import NotFound, PermissionDenied

Outcome = Literal["approve", "block", "escalate"]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled",
                         "executing", "executed", "failed"]
# Where an approval can go from each status; anything else is refused by the
# compare-and-swap. Final statuses go nowhere.
APPROVAL_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"approved", "rejected", "expired", "cancelled"}),
    "approved": frozenset({"executing", "executed", "failed", "cancelled"}),
    "executing": frozenset({"executed", "failed"}),
}
FINAL_APPROVAL_STATUSES = frozenset({"rejected", "expired", "cancelled", "executed", "failed"})


@dataclass(frozen=True)
class Task:
    task_id: str
    agent_id: str
    declared_goal: str
    declared_actions: tuple[str, ...]
    started_at: float
    expires_at: float
    calls_so_far: int
    # The only resources the task's write actions may touch (by the exact
    # value of the tool's resource_arg); empty: not checked.
    declared_resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call:
    """One call of a task's history: an Execute that reached a decision.

    `seq` counts from 1 within the task; `at` is the time of the decision;
    `amount` is the value of the tool's amount_arg when it is a number,
    `resource` that of its resource_arg, as a string, when it was sent."""

    task_id: str
    seq: int
    at: float
    tool: str
    outcome: Outcome
    amount: int | float | None
    resource: str | None


@dataclass(frozen=True)
class Approval:
    """One escalated call waiting for (or past) a human decision. The part
    up to `history` is fixed when the approval is created (the exact call
    and why it escalated); the rest changes only by compare-and-swap
    transitions, each bumping `version`.

    `args_digest` is "sha256:<hex>" of the RFC 8785 form of `args`; the call
    that runs is `action_name` with exactly `args`. `history` is the task's
    calls before this one, as the policy saw them (task.history entries).
    `result` is set once the approved call ran or could not run:
    {"status", "output", "error", "sandbox_id", "output_truncated",
    "decision", "event_id", "finished_at", "cause"}."""

    approval_id: str
    task_id: str
    decision_id: str
    action_name: str
    created_at: float
    expires_at: float
    status: ApprovalStatus
    agent_id: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    args_digest: str = ""
    principal: Principal | None = None
    reason: str = ""
    gate: str = ""
    rule: str = ""
    risk_score: float = 0.0
    risk_flags: tuple[str, ...] = ()
    risk_weights: dict[str, float] = field(default_factory=dict)
    policy_revision: str = ""
    untrusted_input_source: bool = False
    triggering_input: str = ""
    idempotency_key: str = ""
    declared_goal: str = ""
    history: tuple[dict[str, Any], ...] = ()
    # call: an escalated call, run once approved. compensation: a rollback
    # step the policy escalated, run (as a compensation) once approved.
    # manual: an irreversible execution a human must undo by hand; approving
    # says it was handled, and runs nothing.
    kind: Literal["call", "compensation", "manual"] = "call"
    # For compensation and manual: the decision_id of the execution undone.
    compensation_of: str = ""
    # Changed by transitions:
    approver: Principal | None = None
    comment: str = ""
    resolved_at: float | None = None
    result: dict[str, Any] | None = None
    version: int = 1
    updated_at: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in FINAL_APPROVAL_STATUSES


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first result of a call made with an idempotency key, scoped to
    (agent_id, task_id, key). `status`: running (the first is in flight),
    pending_approval (escalated; `result` names the approval), done.
    `result` is the ExecuteResult's essentials (status, output, error,
    approval_id, sandbox_id, output_truncated, rollback_token, decision,
    event_id); `decision_id` the first call's decision."""

    agent_id: str
    task_id: str
    key: str
    tool: str
    args_digest: str
    decision_id: str
    status: Literal["running", "pending_approval", "done"]
    result: dict[str, Any] | None
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class CompensationRecord:
    """One execution of a write tool, registered before it runs, with what
    its rollback needs: the call, the compensation (tool and argument
    sources, as the registry said then; None: irreversible), the derived
    idempotency key the tool's connectors saw, and once it ended its
    outcome (running, succeeded, failed, unknown) and rollback_token.
    `rollback_status` is None until a rollback is asked: then rolling_back,
    success, irreversible, no_compensating_action, rollback_failed,
    pending_approval; `seq` orders a task's executions."""

    decision_id: str
    task_id: str
    agent_id: str
    seq: int
    tool: str
    args: dict[str, Any]
    idempotency_key: str
    compensation: dict[str, Any] | None
    irreversible: bool
    outcome: str
    rollback_token: str | None
    executed_at: float
    rollback_status: str | None = None
    rollback_attempts: int = 0
    rollback_error: str = ""
    rollback_result: dict[str, Any] | None = None
    approval_id: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True)
class Claim:
    """One call counted against its task, atomically with the checks.

    `task` is the task as it was before this call (calls_so_far = calls made
    before it). `consumed` is False when the task was already expired or over
    its budget: nothing was counted, and the policy blocks the call."""

    task: Task
    consumed: bool


@dataclass(frozen=True)
class Revocation:
    """A task or an agent revoked at `revoked_at` (epoch seconds)."""

    target: Literal["task", "agent"]
    target_id: str
    revoked_at: float
    reason: str


def check_owner(task: Task | None, task_id: str, agent_id: str) -> Task:
    """The one ownership rule: the task exists and is the caller's."""
    if task is None:
        raise NotFound(f"task '{task_id}' does not exist")
    if task.agent_id != agent_id:
        raise PermissionDenied(f"task '{task_id}' belongs to another agent")
    return task


class StoreTx(Protocol):
    """One transaction. Nothing it does is visible to readers until commit()."""

    async def create_task(self, task: Task) -> None: ...

    async def claim_call(self, task_id: str, agent_id: str, *, now: float, budget: int) -> Claim:
        """Ownership, expiry and budget checked and the call counted in one
        atomic step. Raises NotFound or PermissionDenied (check_owner) and
        then counts nothing."""
        ...

    async def record_call(self, task_id: str, *, at: float, tool: str, outcome: Outcome,
                          amount: int | float | None, resource: str | None) -> Call:
        """Append a call to the task's history (the next seq); the task must
        exist (StoreError otherwise)."""
        ...

    async def list_calls(self, task_id: str, *, limit: int) -> list[Call]:
        """The task's last `limit` calls, oldest first, as this transaction
        sees them (its own uncommitted ones too)."""
        ...

    async def create_approval(self, approval: Approval, *, link_token_sha256: str = "") -> None:
        """A new approval (status pending, version 1). `link_token_sha256`:
        the hash of the single-use token its notification links carry."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None:
        """As this transaction sees it."""
        ...

    async def transition_approval(self, approval_id: str, *, expect: str, to: str, now: float,
                                  approver: Principal | None = None, comment: str | None = None,
                                  result: dict[str, Any] | None = None) -> Approval | None:
        """The one compare-and-swap: `expect` -> `to` (a move listed in
        APPROVAL_TRANSITIONS, ValueError otherwise), version + 1; `approver`,
        `comment` and resolved_at=now are set on approved/rejected, `result`
        when given. Returns the changed approval, or None when its status was
        not `expect` (someone else moved it first): nothing changed."""
        ...

    async def expire_due_approvals(self, *, now: float, limit: int = 100) -> list[Approval]:
        """Pending approvals whose expiry is at or before `now` become
        expired (oldest expiry first, at most `limit`); returns them, changed."""
        ...

    async def consume_link_token(self, approval_id: str, token_sha256: str, *, now: float) -> bool:
        """The approval's link token, used once: True the first time the
        hash matches while the approval is unexpired, False ever after."""
        ...

    async def revoke(self, revocation: Revocation) -> None:
        """Record a revocation; a later one of the same target moves its time
        forward, never back."""
        ...

    async def end_tasks(self, task_ids: list[str], *, at: float) -> None:
        """Tasks end at `at` if they would have lived longer (revocation)."""
        ...

    async def live_tasks_of(self, agent_id: str, *, now: float) -> list[str]:
        """Ids of the agent's tasks not yet expired, read inside the transaction."""
        ...

    async def tasks_of(self, agent_id: str) -> list[str]:
        """Ids of every task of the agent, ended or not."""
        ...

    async def cancel_pending_approvals(self, task_ids: list[str], *, now: float = 0.0) -> list[Approval]:
        """Pending approvals of these tasks become cancelled; returns them, changed."""
        ...

    # -- idempotency -------------------------------------------------------

    async def get_idempotency(self, agent_id: str, task_id: str, key: str) -> IdempotencyRecord | None: ...

    async def put_idempotency(self, record: IdempotencyRecord) -> None:
        """Claim a key (a duplicate key is StoreError: the caller looked first)."""
        ...

    async def finish_idempotency(self, agent_id: str, task_id: str, key: str, *, status: str,
                                 result: dict[str, Any]) -> None: ...

    # -- compensations (the rollback engine) -----------------------------------

    async def register_compensation(self, record: CompensationRecord) -> CompensationRecord:
        """Before the call runs; `seq` is assigned (the task's next)."""
        ...

    async def finish_compensation(self, decision_id: str, *, outcome: str, rollback_token: str | None,
                                  now: float) -> None: ...

    async def get_compensation(self, decision_id: str) -> CompensationRecord | None: ...

    async def set_rollback(self, decision_id: str, *, expect: tuple[str | None, ...], to: str, now: float,
                           attempts: int | None = None, error: str | None = None,
                           result: dict[str, Any] | None = None, approval_id: str | None = None) -> bool:
        """Compare-and-swap of the rollback status; False when it was not one of `expect`."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class StateStore(Protocol):
    name: str

    def transaction(self) -> AbstractAsyncContextManager[StoreTx]:
        """`async with store.transaction() as tx:`; leaving the block without
        tx.commit() (or by an exception) rolls back."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def list_approvals(self, *, status: str | None = None, agent_id: str | None = None,
                             task_id: str | None = None, limit: int = 50,
                             before: tuple[float, str] | None = None) -> list[Approval]:
        """Newest first (created_at, then approval_id, descending); `before`
        = the (created_at, approval_id) of the last row of the previous page."""
        ...

    async def approvals_with_status(self, statuses: tuple[str, ...]) -> list[Approval]:
        """Every approval in one of these statuses, oldest first (restart
        recovery, the expiry sweeper, the console's queue)."""
        ...

    async def list_calls(self, task_id: str, *, limit: int) -> list[Call]:
        """The task's last `limit` committed calls, oldest first."""
        ...

    async def list_revocations(self) -> list[Revocation]: ...

    async def get_idempotency(self, agent_id: str, task_id: str, key: str) -> IdempotencyRecord | None: ...

    async def prune_idempotency(self, *, now: float) -> int:
        """Forget the keys whose retention ended (their task's end plus
        idempotency.retention_s); a repeat after that is a new call."""
        ...

    async def compensations_of(self, task_id: str) -> list[CompensationRecord]:
        """The task's executions of write tools, oldest first."""
        ...

    async def get_compensation(self, decision_id: str) -> CompensationRecord | None: ...

    async def compensations_where(self, *, outcome: tuple[str, ...] = (),
                                  rollback_status: tuple[str, ...] = ()) -> list[CompensationRecord]:
        """Every execution with one of these outcomes or rollback statuses
        (restart recovery; the console's "needs attention")."""
        ...

    async def unknown_after_restart(self, *, now: float) -> tuple[list[CompensationRecord], int]:
        """At start-up: executions still `running` become `unknown`, and
        idempotency keys still `running` become done with an unknown outcome.
        Returns the executions changed and how many keys."""
        ...

    def close(self) -> None:
        """Blocking; once, at shutdown."""
        ...
