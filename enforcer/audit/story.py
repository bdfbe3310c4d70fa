"""What a verified log says happened: tasks, and the calls within them.

A call is one tool call as the log tells it: its decision (a Decide dry run or
an Execute), the execution entries that name the decision's id, and any
rejection that names it; or a request rejected before any decision. Built
only from a VerifiedLog (enforcer.audit.verified), so everything here was
verified and read through the record types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from enforcer.audit.records import DecisionRecord, ExecutionRecord, RejectedRecord, TaskStarted
from enforcer.audit.verified import VerifiedEntry, VerifiedLog
from enforcer.errors import AuditError


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time or date; naive times are UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise AuditError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01 or 2026-12-01T20:16:00Z)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def entry_time(e: VerifiedEntry) -> datetime | None:
    try:
        return parse_time(e.record.timestamp)
    except AuditError:
        return None


def mode(record: Any) -> str:
    """Whether a call was a Decide dry run or an Execute (or another RPC)."""
    rpc = getattr(record, "rpc", "")
    return "dry run" if rpc == "Decide" else rpc


@dataclass
class Call:
    first: VerifiedEntry  # the decision, or the rejection / execution that opens the call
    decision: DecisionRecord | None = None
    rejected: RejectedRecord | None = None
    executions: list[VerifiedEntry] = field(default_factory=list)
    later_rejections: list[VerifiedEntry] = field(default_factory=list)

    @property
    def record(self) -> Any:
        return self.first.record

    @property
    def rpc(self) -> str:
        return self.record.rpc

    @property
    def mode(self) -> str:
        return mode(self.record)

    def args(self) -> Any:
        return self.record.input_payload.get("args", {})

    def context(self) -> dict[str, Any]:
        ctx = self.record.input_payload.get("context", {})
        return ctx if isinstance(ctx, dict) else {"context": ctx}

    def approval(self) -> str:
        d = self.decision
        if d is None or d.outcome != "escalate":
            return ""
        if self.mode == "dry run":
            return "would need approval (dry run: none requested)"
        if d.shadow and not d.enforced:
            return "not requested (shadow mode: ran without approval)"
        if d.hitl_approval_id:
            return f"pending {d.hitl_approval_id} (no resolution in the log)"
        return "requested, no approval id logged"

    def execution(self) -> str:
        """What happened to the call after its decision, in one phrase."""
        if self.rejected is not None:
            return f"rejected: {self.rejected.error_code or self.rejected.error_class}"
        parts = []
        for e in self.executions:
            r = e.record
            bits = [r.outcome, *execution_facts(r)]
            if r.sandbox_id:
                bits.append(f"sandbox {r.sandbox_id}")
            parts.append(", ".join(bits))
        for e in self.later_rejections:
            parts.append(f"then rejected: {e.record.error_code or e.record.error_class}: {e.record.reason}")
        if parts:
            return "; ".join(parts)
        d = self.decision
        if d is None:
            return ""
        if self.mode == "dry run":
            return "not run (dry run)"
        if d.outcome == "block" and d.enforced:
            return "not run (blocked)"
        if d.outcome == "escalate" and d.enforced:
            return "not run (awaiting approval)"
        return "no execution entry"

    def outcome(self) -> str:
        return self.record.outcome

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        r = self.record
        doc: dict[str, Any] = {
            "seq": self.first.seq, "file": self.first.file, "line": self.first.line, "timestamp": r.timestamp,
            "event_id": r.event_id, "task_id": r.task_id, "agent_id": r.agent_id, "rpc": r.rpc,
            "mode": self.mode, "tool": r.action_name, "args": self.args(), "context": self.context(),
            "kind": r.KIND, "outcome": r.outcome, "reason": r.reason, "risk_score": r.risk_score,
            "policy_applied": r.policy_applied,
            "decision_id": r.decision_id,
            "gate": d.gate if d else None, "rule": d.rule if d else None,
            "risk_flags": {f: d.risk_weights.get(f) for f in d.risk_flags} if d else {},
            "shadow": d.shadow if d else False, "enforced": d.enforced if d else None,
            "approval": self.approval() or None, "hitl_approval_id": r.hitl_approval_id,
            "execution": self.execution() or None,
            "executions": [{**e.record.to_dict(), "seq": e.seq} for e in self.executions],
            "rejection": ({"error_code": self.rejected.error_code, "error_class": self.rejected.error_class}
                          if self.rejected else None),
        }
        return doc


def group_calls(entries: list[VerifiedEntry]) -> list[Call]:
    """The calls among these entries, in log order of their first entry."""
    calls: list[Call] = []
    by_decision: dict[str, Call] = {}
    for e in entries:
        r = e.record
        if isinstance(r, DecisionRecord):
            call = Call(e, decision=r)
            calls.append(call)
            if r.decision_id:
                by_decision[r.decision_id] = call
        elif isinstance(r, ExecutionRecord):
            call = by_decision.get(r.decision_id or "")
            if call is None:  # its decision is outside the selection
                call = Call(e)
                calls.append(call)
                if r.decision_id:
                    by_decision[r.decision_id] = call
            call.executions.append(e)
        elif isinstance(r, RejectedRecord):
            call = by_decision.get(r.decision_id or "")
            if call is not None:
                call.later_rejections.append(e)
            else:
                calls.append(Call(e, rejected=r))
    return calls


@dataclass
class TaskSummary:
    task_id: str
    agent_id: str = ""
    goal: str = ""
    first: str = ""
    last: str = ""
    entries: int = 0
    other_agents: set[str] = field(default_factory=set)
    outcomes: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id, "goal": self.goal, "first": self.first,
                "last": self.last, "entries": self.entries, "outcomes": dict(sorted(self.outcomes.items())),
                "other_agents": sorted(self.other_agents)}


def outcome_key(record: Any) -> str | None:
    """The label a task's outcome counts use for one entry."""
    if isinstance(record, DecisionRecord):
        prefix = "dry-run " if record.rpc == "Decide" else ""
        shadow = " (shadow, not enforced)" if not record.enforced else ""
        return f"{prefix}{record.outcome}{shadow}"
    if isinstance(record, (ExecutionRecord, RejectedRecord)):
        return record.outcome
    return None


def summarise_tasks(entries: Iterable[VerifiedEntry]) -> list[TaskSummary]:
    """Every task of these entries, in order of its first entry."""
    tasks: dict[str, TaskSummary] = {}
    for e in entries:
        r = e.record
        task_id = getattr(r, "task_id", "")
        if not task_id:
            continue
        t = tasks.get(task_id)
        if t is None:
            t = tasks[task_id] = TaskSummary(task_id, first=r.timestamp)
        t.entries += 1
        t.last = r.timestamp
        if isinstance(r, TaskStarted) and not t.agent_id:
            t.agent_id = r.agent_id
            goal = r.input_payload.get("declared_goal", "")
            t.goal = goal if isinstance(goal, str) else ""
        elif r.agent_id and not t.agent_id:
            t.agent_id = r.agent_id
        if r.agent_id and r.agent_id != t.agent_id:
            t.other_agents.add(r.agent_id)
        key = outcome_key(r)
        if key is not None:
            t.outcomes[key] += 1
    for t in tasks.values():
        t.other_agents.discard(t.agent_id)
    return list(tasks.values())


def select(log: VerifiedLog, *, task: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> list[VerifiedEntry]:
    """Entries of one task and/or a time range [since, until)."""
    out = []
    for e in log.entries:
        if task is not None and getattr(e.record, "task_id", "") != task:
            continue
        if since is not None or until is not None:
            t = entry_time(e)
            if t is None or (since is not None and t < since) or (until is not None and t >= until):
                continue
        out.append(e)
    return out


def execution_facts(r: ExecutionRecord) -> list[str]:
    """How an execution ended, in short phrases (timeline, story and report)."""
    facts = []
    if r.exit_code is not None:
        facts.append(f"exit {r.exit_code}")
    if r.signal is not None:
        facts.append(f"signal {r.signal}")
    if r.timed_out:
        facts.append("timed out")
    if r.cause:
        facts.append(f"cause {r.cause}")
    if r.output_truncated:
        facts.append("output truncated")
    facts.append(f"{r.duration_ms:g} ms")
    return facts
