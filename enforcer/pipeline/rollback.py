"""Stage 6, rollback: undo a task's executions with the compensations the
tool registry registers for them, one step each (a saga, newest first).

    Rollback(decision_id)   one execution of a write tool
    RollbackTask(task_id)   every one of the task, newest first

Each step ends as one of the seed's results: success; irreversible (no
compensation: a human is asked, through the approval loop, with the full
context; approving says it was handled by hand and runs nothing);
no_compensating_action; rollback_failed (every attempt failed: parked,
shown under "needs attention", counted in aecl_rollback_failed_total);
already_rolled_back; and pending_approval (the policy escalated the
compensation: it runs once approved).

Invariants:
- the compensation was registered (enforcer.pipeline.ledger) before the
  original call ran, so a call that timed out or died mid-run is undone
  too; its arguments come from the original call's arguments, the
  rollback_token its tool returned (absent when the outcome is unknown)
  and the idempotency key its connectors saw, so it must tolerate "never
  happened";
- a compensation goes through the same pipeline as any call: validated
  against the registry, decided by the policy in force with
  input.compensation (may_roll_back, blocks, extensions), run in the
  sandbox through its connectors, every attempt an execution entry;
- a step's status changes by compare-and-swap after the `rollback` entry
  explaining it is durable; a rollback asked twice is idempotent
  (already_rolled_back), asked while one runs is CallInFlight (ABORTED);
- compensations are not themselves registered for rollback: undoing an
  undo is a human's job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from enforcer.audit.records import Principal, RollbackRecord, timestamp
from enforcer.config import LimitsConfig, RollbackConfig
from enforcer.errors import AeclError, CallInFlight, NotFound
from enforcer.metrics import Metrics
from enforcer.pipeline.admit import Admitted
from enforcer.pipeline.approvals import Approvals, link_token_hash, new_approval_id, new_link_token
from enforcer.pipeline.decide import decide
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.payload import args_digest
from enforcer.pipeline.policy_input import MAX_HISTORY, history_entry
from enforcer.pipeline.rejection import rejected_record
from enforcer.pipeline.request import CallRequest, ExecuteResult
from enforcer.pipeline.run_approved import RunApproved
from enforcer.pipeline.validate import require_id, validate_call
from enforcer.policy.decision import Decision
from enforcer.policy.holder import PolicyHolder
from enforcer.state.store import Approval, CompensationRecord, StateStore, Task, check_owner

log = logging.getLogger(__name__)

# Steps a new rollback request may (re)start from: never asked, or parked.
RESTARTABLE = (None, "rollback_failed", "no_compensating_action")


@dataclass(frozen=True)
class StepResult:
    decision_id: str
    tool: str
    status: str
    compensation_tool: str = ""
    output: dict[str, Any] | None = None
    error: str = ""
    attempts: int = 0
    approval_id: str = ""
    event_id: str = ""


def compensation_args(c: CompensationRecord) -> dict[str, Any]:
    """The compensation's arguments from the registered sources; a source
    without a value (no rollback_token: the outcome is unknown) is left out."""
    spec = c.compensation or {}
    out: dict[str, Any] = {}
    for name, src in (spec.get("args") or {}).items():
        source = src.get("from")
        if source == "args":
            value = c.args.get(src.get("name"))
        elif source == "rollback_token":
            value = c.rollback_token
        else:
            value = c.idempotency_key or None
        if value is not None:
            out[name] = value
    return out


class RollbackEngine:
    def __init__(self, *, journal: Journal, store: StateStore, policy: PolicyHolder, run_approved: RunApproved,
                 approvals: Approvals, limits: LimitsConfig, config: RollbackConfig, clock: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        self.journal = journal
        self.store = store
        self.policy = policy
        self.run_approved = run_approved
        self.approvals = approvals
        self.limits = limits
        self.config = config
        self.clock = clock
        self.metrics = metrics
        approvals.runners["manual"] = self._handled_by_hand
        approvals.runners["compensation"] = self._approved_compensation

    # -- the RPCs ------------------------------------------------------------------

    async def rollback(self, agent_id: str, task_id: str, decision_id: str,
                       principal: Principal | None) -> StepResult:
        t0 = time.perf_counter()
        try:
            require_id("decision_id", decision_id)
            task = await self._task(agent_id, task_id)
            c = await self.store.get_compensation(decision_id)
            if c is None or c.task_id != task_id:
                raise NotFound(f"decision_id: no execution of a write tool with decision '{decision_id}' in task "
                               f"{task_id}")
            return await self._step(c, task, principal, t0)
        except AeclError as e:
            await self._refused("Rollback", agent_id, task_id, decision_id, e, t0, principal)
            raise

    async def rollback_task(self, agent_id: str, task_id: str, principal: Principal | None) -> list[StepResult]:
        t0 = time.perf_counter()
        try:
            task = await self._task(agent_id, task_id)
        except AeclError as e:
            await self._refused("RollbackTask", agent_id, task_id, "", e, t0, principal)
            raise
        steps = []
        for c in reversed(await self.store.compensations_of(task_id)):
            try:
                steps.append(await self._step(c, task, principal, time.perf_counter()))
            except CallInFlight as e:  # one still running: said so, the saga goes on
                steps.append(StepResult(c.decision_id, c.tool, "rollback_failed", error=str(e)))
        return steps

    # -- one step ----------------------------------------------------------------------

    async def _step(self, c: CompensationRecord, task: Task, principal: Principal | None, t0: float) -> StepResult:
        if c.outcome == "running":
            raise CallInFlight(f"the execution {c.decision_id} ({c.tool}) is still running; roll it back once "
                               "it ended")
        if c.rollback_status == "success":
            return await self._final(c, "already_rolled_back", principal, t0, change=False,
                                     reason=f"{c.tool} ({c.decision_id}) was rolled back already")
        expect: tuple[str | None, ...] = RESTARTABLE
        if c.rollback_status in ("irreversible", "pending_approval"):
            a = await self.store.get_approval(c.approval_id)
            if a is None or not a.final:
                return await self._final(c, c.rollback_status, principal, t0, change=False,
                                         approval_id=c.approval_id,
                                         reason=f"waiting for a human already (approval {c.approval_id})")
            # Its approval was rejected, expired or cancelled: asking again asks again.
            expect = (c.rollback_status,)
        if c.rollback_status == "rolling_back":
            raise CallInFlight(f"the rollback of {c.decision_id} ({c.tool}) is already running")
        if not await self._claim(c, principal, t0, expect):
            raise CallInFlight(f"the rollback of {c.decision_id} ({c.tool}) was started by another request")
        spec = c.compensation
        if spec is None:
            if c.irreversible:
                return await self._ask_a_human(c, task, principal, t0)
            return await self._final(c, "no_compensating_action", principal, t0,
                                     reason=f"{c.tool} declares no compensation")
        req = CallRequest(rpc="Rollback", task_id=c.task_id, agent_id=c.agent_id, tool=spec["tool"],
                          args=compensation_args(c), principal=principal)
        active = self.policy.current
        try:
            tool = validate_call(req, active.registry, self.limits)
        except AeclError as e:
            return await self._final(c, "rollback_failed", principal, t0, error=f"the compensation is not a valid "
                                     f"call under the registry in force: {e}", compensation_tool=req.tool)
        calls = await self.store.list_calls(task.task_id, limit=MAX_HISTORY + 1)
        admitted = Admitted(tool, task, tuple(calls[-MAX_HISTORY:]), history_truncated=len(calls) > MAX_HISTORY)
        decision, record = await decide(req, active, admitted, self.clock(), t0, compensation=_policy_view(c))
        if decision.outcome == "block":
            await self.journal.append(record)
            return await self._final(c, "rollback_failed", principal, t0, compensation_tool=req.tool,
                                     error=f"the policy blocks the compensation ({decision.gate}/{decision.rule}): "
                                           f"{decision.reason}", decision_id=decision.decision_id)
        if decision.outcome == "escalate":
            return await self._escalate(c, req, admitted, decision, record, principal, t0)
        return await self._run(c, req, tool, task, decision, record, principal, t0)

    async def _run(self, c: CompensationRecord, req: CallRequest, tool: Any, task: Task, decision: Decision,
                   record: Any, principal: Principal | None, t0: float) -> StepResult:
        """Attempts with backoff; each is an execution entry after the one decision."""
        result: ExecuteResult | None = None
        attempts, wait = 0, self.config.backoff_s
        for attempts in range(1, self.config.max_attempts + 1):
            durable = self.journal.append(record) if attempts == 1 else _done()
            result = await self.run_approved.run(req, tool, task, decision, authorised=durable,
                                                 tools_dir=self.policy.current.registry.tools_dir, t0=t0)
            if result.status == "succeeded":
                return await self._final(c, "success", principal, t0, compensation_tool=req.tool,
                                         output=result.output, attempts=attempts, decision_id=decision.decision_id)
            if attempts < self.config.max_attempts:
                log.warning("rollback of %s: %s attempt %d failed (%s); again in %.1f s", c.decision_id, req.tool,
                            attempts, result.error, wait)
                await asyncio.sleep(wait)
                wait *= 2
        assert result is not None
        return await self._final(c, "rollback_failed", principal, t0, compensation_tool=req.tool,
                                 error=result.error or f"the compensation ended {result.status}", attempts=attempts,
                                 output=result.output, decision_id=decision.decision_id)

    # -- humans --------------------------------------------------------------------------

    async def _ask_a_human(self, c: CompensationRecord, task: Task, principal: Principal | None,
                           t0: float) -> StepResult:
        """Nothing can undo it: an approval with the full context, which a
        human resolves once they undid it by hand."""
        now = self.clock()
        calls = await self.store.list_calls(task.task_id, limit=MAX_HISTORY)
        approval = Approval(
            approval_id=new_approval_id(), task_id=c.task_id, decision_id=c.decision_id, action_name=c.tool,
            created_at=now, expires_at=now + 7 * 24 * 3600, status="pending", agent_id=c.agent_id, args=c.args,
            args_digest=args_digest(c.args), principal=principal,
            reason=f"rollback of {c.tool} ({c.decision_id}): it is irreversible and has no compensating action; "
                   "undo it by hand, then approve to record that it was handled",
            gate="rollback", rule="rollback.irreversible", risk_score=1.0, risk_flags=("irreversible",),
            policy_revision=self.policy.current.revision, declared_goal=task.declared_goal,
            history=tuple(history_entry(x) for x in calls), kind="manual", compensation_of=c.decision_id,
            updated_at=now)
        return await self._with_approval(c, approval, "irreversible", principal, t0, record=None)

    async def _escalate(self, c: CompensationRecord, req: CallRequest, admitted: Admitted, decision: Decision,
                        record: Any, principal: Principal | None, t0: float) -> StepResult:
        approval = replace(self.approvals.new_approval(req, admitted, decision, self.clock()), kind="compensation",
                           compensation_of=c.decision_id)
        return await self._with_approval(c, approval, "pending_approval", principal, t0,
                                         record=replace(record, hitl_approval_id=approval.approval_id))

    async def _with_approval(self, c: CompensationRecord, approval: Approval, status: str,
                             principal: Principal | None, t0: float, *, record: Any) -> StepResult:
        link_token = new_link_token()
        entry = self._record(c, status, principal, t0, approval_id=approval.approval_id,
                             compensation_tool=(c.compensation or {}).get("tool", ""),
                             reason=approval.reason)
        async with self.store.transaction() as tx:
            await tx.create_approval(approval, link_token_sha256=link_token_hash(link_token))
            await tx.set_rollback(c.decision_id, expect=("rolling_back",), to=status, now=self.clock(),
                                  approval_id=approval.approval_id)
            if record is not None:
                await self.journal.append(record)
            appended = await self.journal.append(entry)
            await tx.commit()
        self.approvals.created(approval, link_token)
        return StepResult(c.decision_id, c.tool, status, entry.compensation_tool, approval_id=approval.approval_id,
                          event_id=appended.event_id)

    async def _handled_by_hand(self, approval_id: str) -> Approval | None:
        """An approved `manual` approval: the human undid it; nothing runs."""
        a = await self.store.get_approval(approval_id)
        if a is None or a.status != "approved":
            return None
        c = await self.store.get_compensation(a.compensation_of)
        who = a.approver.id if a.approver is not None else "?"
        result = {"status": "succeeded", "output": {"handled_by": who, "comment": a.comment}, "error": "",
                  "sandbox_id": "", "output_truncated": False, "decision": None, "event_id": "",
                  "finished_at": self.clock(), "cause": "manual"}
        t0 = time.perf_counter()
        async with self.store.transaction() as tx:
            moved = await tx.transition_approval(approval_id, expect="approved", to="executed", now=self.clock(),
                                                 result=result)
            if moved is None:
                return None
            if c is not None:
                await tx.set_rollback(c.decision_id, expect=("irreversible",), to="success", now=self.clock())
                await self.journal.append(self._record(
                    c, "success", a.approver, t0, approval_id=approval_id,
                    reason=f"undone by hand: {who} approved {approval_id}" + (f" ({a.comment})" if a.comment else "")))
            await tx.commit()
        self.approvals.published([moved])
        return moved

    async def _approved_compensation(self, approval_id: str) -> Approval | None:
        """An approved escalated compensation: decided again (with the
        approval and the compensation in the input) and run, as the
        approval loop runs calls; the step's status follows its end."""
        a = await self.store.get_approval(approval_id)
        if a is None or a.status != "approved":
            return None
        c = await self.store.get_compensation(a.compensation_of)
        final = await self.approvals.run(approval_id, compensation=_policy_view(c) if c is not None else None,
                                         use_ledger=False)
        if c is not None and final is not None:
            ok = final.status == "executed"
            entry = self._record(c, "success" if ok else "rollback_failed", a.approver, time.perf_counter(),
                                 approval_id=approval_id, compensation_tool=a.action_name,
                                 error="" if ok else (final.result or {}).get("error", ""))
            async with self.store.transaction() as tx:
                await tx.set_rollback(c.decision_id, expect=("pending_approval",),
                                      to="success" if ok else "rollback_failed", now=self.clock(),
                                      error=entry.error, result=final.result)
                await self.journal.append(entry)
                await tx.commit()
            if not ok and self.metrics is not None:
                self.metrics.rollback_failed.labels(tool=a.action_name).inc()
        return final

    # -- state ---------------------------------------------------------------------------

    async def _task(self, agent_id: str, task_id: str) -> Task:
        require_id("task_id", task_id)
        return check_owner(await self.store.get_task(task_id), task_id, agent_id)

    async def _claim(self, c: CompensationRecord, principal: Principal | None, t0: float,
                     expect: tuple[str | None, ...] = RESTARTABLE) -> bool:
        entry = self._record(c, "started", principal, t0, reason=f"rolling back {c.tool} ({c.decision_id})",
                             compensation_tool=(c.compensation or {}).get("tool", ""))
        async with self.store.transaction() as tx:
            if not await tx.set_rollback(c.decision_id, expect=expect, to="rolling_back", now=self.clock()):
                return False
            await self.journal.append(entry)
            await tx.commit()
        return True

    async def _final(self, c: CompensationRecord, status: str, principal: Principal | None, t0: float, *,
                     change: bool = True, reason: str = "", error: str = "", output: dict[str, Any] | None = None,
                     attempts: int = 0, compensation_tool: str = "", approval_id: str = "",
                     decision_id: str = "") -> StepResult:
        entry = self._record(c, status, principal, t0, reason=reason or error or f"{status}", error=error,
                             attempts=attempts, compensation_tool=compensation_tool, approval_id=approval_id)
        if change:
            async with self.store.transaction() as tx:
                await tx.set_rollback(c.decision_id, expect=("rolling_back",), to=status, now=self.clock(),
                                      attempts=attempts, error=error, result={"output": output, "decision_id":
                                                                              decision_id})
                appended = await self.journal.append(entry)
                await tx.commit()
        else:
            appended = await self.journal.append(entry)
        if change and status == "rollback_failed" and self.metrics is not None:
            self.metrics.rollback_failed.labels(tool=compensation_tool or c.tool).inc()
        return StepResult(c.decision_id, c.tool, status, compensation_tool, output, error, attempts, approval_id,
                          appended.event_id)

    def _record(self, c: CompensationRecord, status: str, principal: Principal | None, t0: float, *,
                reason: str = "", error: str = "", attempts: int = 0, compensation_tool: str = "",
                approval_id: str = "") -> RollbackRecord:
        return RollbackRecord(
            timestamp=timestamp(self.clock()), agent_id=c.agent_id, task_id=c.task_id, principal=principal,
            rpc="Rollback", action_name=c.tool, input_payload={"args": c.args},
            policy_applied=self.policy.current.revision, outcome=status, reason=reason[:4096],
            latency_ms=round((time.perf_counter() - t0) * 1000, 3), decision_id=c.decision_id,
            hitl_approval_id=approval_id or None, rollback_token=c.rollback_token,
            original_decision_id=c.decision_id, compensation_tool=compensation_tool, attempts=attempts,
            error=error[:4096])

    async def _refused(self, rpc: str, agent_id: str, task_id: str, decision_id: str, error: AeclError, t0: float,
                       principal: Principal | None) -> None:
        await self.journal.append(rejected_record(rpc, agent_id, task_id, "", {"decision_id": decision_id[:256]},
                                                  error, now=self.clock(), policy_revision=self.policy.current.revision,
                                                  t0=t0, principal=principal))


def _policy_view(c: CompensationRecord) -> dict[str, Any]:
    """What the policy sees of the execution a compensation undoes (input.compensation)."""
    return {"of": c.decision_id, "tool": c.tool, "args": c.args, "outcome": c.outcome,
            "rollback_token": c.rollback_token, "executed_at": c.executed_at}


async def _done() -> None:
    """The authorisation of a retry: its decision is durable already."""

