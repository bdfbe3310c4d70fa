"""The state-store interface. SQLite ships first; PostgreSQL slots in behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    status: str  # pending | approved | denied | expired


class StateStore(Protocol):
    def create_task(self, task: Task) -> None: ...

    def get_task(self, task_id: str) -> Task | None: ...

    def claim_call(self, task_id: str) -> Task:
        """Atomically count one more call against the task; returns the task as it
        was before this call (calls_so_far = calls made before it)."""
        ...

    def create_approval(self, approval: Approval) -> None: ...

    def get_approval(self, approval_id: str) -> Approval | None: ...

    def close(self) -> None: ...
