"""ActionLog records: what each audit entry says. One builder per event kind,
all with the seed's ActionLog fields so a reader of the log finds them in
every entry."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from enforcer.policy.decision import Decision


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def base_record(
    kind: str,
    rpc: str,
    *,
    now: float,
    agent_id: str,
    task_id: str,
    action_name: str,
    input_payload: dict[str, Any],
    policy_revision: str,
    latency_ms: float,
) -> dict[str, Any]:
    return {
        "event_id": new_id("evt"),
        "kind": kind,
        "rpc": rpc,
        "timestamp": _timestamp(now),
        "agent_id": agent_id,
        "task_id": task_id,
        "action_name": action_name,
        "input_payload": input_payload,
        "policy_applied": policy_revision,
        "risk_score": None,
        "outcome": None,
        "reason": "",
        "latency_ms": round(latency_ms, 3),
        "decision_id": None,
        "sandbox_id": None,
        "hitl_approval_id": None,
        "rollback_token": None,
    }


def with_decision(record: dict[str, Any], decision: Decision) -> dict[str, Any]:
    record.update(
        risk_score=decision.risk_score,
        outcome=decision.outcome,
        reason=decision.reason,
        decision_id=decision.decision_id,
        gate=decision.gate,
        risk_flags=list(decision.risk_flags),
        rule=decision.rule,
        risk_weights=dict(decision.risk_weights),
        shadow=decision.shadow,
    )
    return record
