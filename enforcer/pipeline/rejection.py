"""The record of a request refused before (or instead of) a decision."""

from __future__ import annotations

import time
from typing import Any

from enforcer.audit.records import Principal, RejectedRecord, timestamp
from enforcer.errors import AeclError


def rejected_record(rpc: str, agent_id: str, task_id: str, action: str, payload: dict[str, Any],
                    error: AeclError, *, now: float, policy_revision: str, t0: float,
                    decision_id: str | None = None, principal: Principal | None = None) -> RejectedRecord:
    # Identifiers are untrusted: bounded before they reach the log.
    return RejectedRecord(
        timestamp=timestamp(now), agent_id=agent_id[:256], task_id=task_id[:256], principal=principal, rpc=rpc,
        action_name=action[:256], input_payload=payload, policy_applied=policy_revision,
        outcome="rejected", reason=str(error), latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        decision_id=decision_id, error_class=type(error).__name__, error_code=error.code,
    )
