"""Stage 2, decide: what does the policy in force say about this call?

Invariants:
- the policy input is built from the operator's registry, the stored task
  and its history, never from the agent's claims about risk (policy_input.py);
- any engine failure, missing or malformed answer is a BLOCK
  (enforcer.policy.evaluate), also in shadow mode;
- nothing is written: the stage returns the decision and the record that
  explains it, and the dispatcher orders the append against state changes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from enforcer.audit.records import DecisionRecord, new_id, timestamp
from enforcer.pipeline.admit import Admitted
from enforcer.pipeline.payload import payload
from enforcer.pipeline.policy_input import build_policy_input
from enforcer.pipeline.request import CallRequest
from enforcer.policy.decision import Decision
from enforcer.policy.evaluate import evaluate_decision
from enforcer.policy.holder import ActivePolicy


async def decide(req: CallRequest, active: ActivePolicy, admitted: Admitted, now: float,
                 t0: float, *, approval: dict | None = None,
                 compensation: dict | None = None) -> tuple[Decision, DecisionRecord]:
    """`approval`: an approved call run by the service, decided again with
    its approval in the input (input.approval). `compensation`: the
    rollback engine undoing an execution (input.compensation)."""
    engine = active.engine
    decision_id = new_id("dec")
    policy_input = build_policy_input(req, admitted.tool, admitted.task, now, admitted.history,
                                      history_truncated=admitted.history_truncated)
    if approval is not None:
        policy_input["approval"] = approval
    if compensation is not None:
        policy_input["compensation"] = compensation
    if engine.blocking:  # network I/O (a sidecar): off the event loop
        decision = await asyncio.get_running_loop().run_in_executor(
            None, lambda: evaluate_decision(engine, policy_input, decision_id=decision_id))
    else:
        decision = evaluate_decision(engine, policy_input, decision_id=decision_id)
    if active.is_shadow(req.agent_id) and not decision.failed_closed and approval is None and compensation is None:
        # Fail closed even in shadow mode: an engine error is never shadowed.
        decision = replace(decision, shadow=True)
    explained = decision.explanation()  # the Decision's fields, listed once (policy/decision.py)
    explained["policy_applied"] = explained.pop("policy_revision")
    record = DecisionRecord(
        timestamp=timestamp(now), agent_id=req.agent_id, task_id=req.task_id, principal=req.principal,
        rpc=req.rpc, action_name=req.tool, input_payload=payload(req), latency_ms=_ms(t0), **explained,
        # The complete input, so `aecl policy replay` can re-decide this call
        # under a candidate policy exactly as it was decided here.
        policy_input=policy_input,
        idempotency_key=(req.idempotency_key or None) if req.rpc == "Execute" else None,
    )
    return decision, record


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
