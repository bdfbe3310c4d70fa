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
  approval created          the escalating decision       the decision's append
  (next issues)
  approval resolved         approval_resolved             its append (a compare-and-swap)
  idempotency key claimed   the call's decision           the decision's append
  compensation registered   the call's decision           the decision's append
  task / agent revoked      revocation                    its append

If the commit itself fails after the append, the log explains something the
store lacks (never the reverse); the pipeline then logs the failure and
nothing runs.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from enforcer.errors import NotFound, PermissionDenied

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled",
                         "executing", "executed", "failed"]


@dataclass(frozen=True)
class Task:
    task_id: str
    agent_id: str
    declared_goal: str
    declared_actions: tuple[str, ...]
    started_at: float
    expires_at: float
    calls_so_far: int


@dataclass(frozen=True)
class Approval:
    approval_id: str
    task_id: str
    decision_id: str
    action_name: str
    created_at: float
    expires_at: float
    status: ApprovalStatus


@dataclass(frozen=True)
class Claim:
    """One call counted against its task, atomically with the checks.

    `task` is the task as it was before this call (calls_so_far = calls made
    before it). `consumed` is False when the task was already expired or over
    its budget: nothing was counted, and the policy blocks the call."""

    task: Task
    consumed: bool


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

    async def create_approval(self, approval: Approval) -> None: ...

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

    def close(self) -> None:
        """Blocking; once, at shutdown."""
        ...
