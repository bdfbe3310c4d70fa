"""Which calls need a human to look at the target system: pure selection
over verified log entries and approvals (no I/O, unit-tested alone).

Three reasons; the first two in this order of precedence for one execution:
- unknown outcome: the tool may or may not have done its side effect. An
  execution entry that timed out, or ended for a cause that interrupted a
  running tool (client_cancelled, deadline, shutdown, internal_error); or an
  approval whose approved call was interrupted (status failed, result.cause
  "unknown": the service died or crashed while it ran, and it is never run
  again);
- failed write: a write tool (registry access "write") that ran and failed:
  whatever it changed before failing stays changed, and the agent's goal
  was not reached.

And a rollback step parked as rollback_failed (every attempt of its
compensation failed): the change it was to undo is still there. An
execution whose rollback later succeeded, and a parked step retried with
success, need nothing any more.

A read tool's plain failure changes nothing anywhere, and a call refused
before it ran (not_run, sandbox_unavailable, a block) did nothing: neither
needs attention.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from enforcer.audit.records import ExecutionRecord, RollbackRecord, timestamp
from enforcer.audit.verified import VerifiedEntry
from enforcer.state.store import Approval

# ExecutionRecord.cause values that cut a running tool short.
UNKNOWN_CAUSES = frozenset({"client_cancelled", "deadline", "shutdown", "internal_error"})

Why = Literal["unknown_outcome", "failed_write", "rollback_failed"]


@dataclass(frozen=True)
class AttentionItem:
    why: Why
    source: Literal["log", "approval"]
    at: str  # RFC 3339, the log's format
    task_id: str
    agent_id: str
    tool: str
    reason: str
    approval_id: str = ""
    event_id: str = ""
    seq: int | None = None
    cause: str = ""
    sandbox_id: str = ""


def execution_attention(r: ExecutionRecord, write_tools: Collection[str]) -> Why | None:
    """Why this execution entry needs attention, or None."""
    if r.timed_out or r.cause in UNKNOWN_CAUSES or r.outcome == "unknown":
        return "unknown_outcome"
    if r.outcome != "succeeded" and r.action_name in write_tools and not r.cause:
        # cause "" = the tool ran to its own end and failed; any other cause
        # left here (sandbox_unavailable, store_failed, ...) means it never ran
        return "failed_write"
    return None


def approval_attention(a: Approval) -> bool:
    return a.status == "failed" and (a.result or {}).get("cause") == "unknown"


def select_attention(entries: Iterable[VerifiedEntry], approvals: Iterable[Approval],
                     write_tools: Collection[str]) -> list[AttentionItem]:
    """Every item needing attention, newest first. An interrupted approved
    call often has both an execution entry and a failed approval: it is
    listed once (the log's entry, which says more)."""
    items: list[AttentionItem] = []
    seen_approvals: set[str] = set()
    entries = list(entries)
    # The last rollback step of each execution, and the executions undone.
    last_step: dict[str, tuple[VerifiedEntry, RollbackRecord]] = {}
    for e in entries:
        if isinstance(e.record, RollbackRecord) and e.record.outcome != "started":
            last_step[e.record.original_decision_id] = (e, e.record)
    undone = {d for d, (_, r) in last_step.items() if r.outcome in ("success", "already_rolled_back")}
    for e, r in last_step.values():
        if r.outcome == "rollback_failed":
            items.append(AttentionItem(
                why="rollback_failed", source="log", at=r.timestamp, task_id=r.task_id, agent_id=r.agent_id,
                tool=r.action_name, reason=r.error or r.reason, event_id=r.event_id, seq=e.seq,
                cause=r.compensation_tool))
    for e in entries:
        r = e.record
        if not isinstance(r, ExecutionRecord) or r.rpc == "Rollback" or r.decision_id in undone:
            continue  # a compensation's own attempts are its step's story
        why = execution_attention(r, write_tools)
        if why is None:
            continue
        if r.hitl_approval_id:
            seen_approvals.add(r.hitl_approval_id)
        items.append(AttentionItem(
            why=why, source="log", at=r.timestamp, task_id=r.task_id, agent_id=r.agent_id, tool=r.action_name,
            reason=r.reason, approval_id=r.hitl_approval_id or "", event_id=r.event_id, seq=e.seq,
            cause="timed_out" if r.timed_out and not r.cause else r.cause, sandbox_id=r.sandbox_id or ""))
    for a in approvals:
        if not approval_attention(a) or a.approval_id in seen_approvals:
            continue
        result = a.result or {}
        items.append(AttentionItem(
            why="unknown_outcome", source="approval", at=timestamp(a.updated_at or a.created_at),
            task_id=a.task_id, agent_id=a.agent_id, tool=a.action_name, reason=str(result.get("error", "")),
            approval_id=a.approval_id, event_id=str(result.get("event_id") or ""), cause="unknown"))
    # RFC 3339 UTC strings of one format sort as times do.
    items.sort(key=lambda i: i.at, reverse=True)
    return items


__all__ = ["UNKNOWN_CAUSES", "AttentionItem", "approval_attention", "execution_attention", "select_attention"]
