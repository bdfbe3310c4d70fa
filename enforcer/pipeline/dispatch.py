"""Stage 3, dispatch: act on an Execute's decision (block, escalate,
approve), ordering every state change against the audit log.

Invariants (enforcer.state.store documents the ordering table):
- a state change commits only after the entry that explains it is durable;
  if the append fails, the transaction rolls back: no claimed call, no
  pending approval exists that the log does not show;
- every Execute that reaches a decision adds one call to its task's history
  (its tool, the decision's outcome, the registry-declared amount and
  resource), in the claim's transaction: it commits with the claim, after
  the decision's append, or not at all. In shadow mode the history keeps the
  policy's outcome, not what ran, so a shadowed rule sees what enforcing it
  would have seen;
- shadow mode: a non-approving verdict is logged with enforced=false and the
  call proceeds as if approved. Loud on purpose;
- an approved call goes to run-approved with its authorisation (append,
  then commit) still in flight, so the fsync overlaps the sandbox's start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from enforcer.audit.records import DecisionRecord
from enforcer.errors import StoreError
from enforcer.pipeline.admit import Admitted
from enforcer.pipeline.approvals import Approvals, link_token_hash, new_link_token
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.ledger import CallLedger
from enforcer.pipeline.payload import payload
from enforcer.pipeline.policy_input import call_amount, call_resource
from enforcer.pipeline.rejection import rejected_record
from enforcer.pipeline.request import CallRequest, ExecuteResult
from enforcer.pipeline.run_approved import RunApproved, run_recorded
from enforcer.policy.decision import Decision
from enforcer.policy.holder import ActivePolicy
from enforcer.state.store import StoreTx

log = logging.getLogger(__name__)


class Dispatch:
    def __init__(self, journal: Journal, run_approved: RunApproved, approvals: Approvals, ledger: CallLedger,
                 clock: Callable[[], float]) -> None:
        self.journal = journal
        self.run_approved = run_approved
        self.approvals = approvals
        self.ledger = ledger
        self.clock = clock

    async def execute(self, req: CallRequest, active: ActivePolicy, admitted: Admitted, decision: Decision,
                      record: DecisionRecord, tx: StoreTx, t0: float, *, now: float | None = None) -> ExecuteResult:
        await self._record_call(req, admitted, decision, tx, t0, self.clock() if now is None else now)
        if decision.shadow and decision.outcome != "approve":
            log.warning("SHADOW: %s %s for agent %s would be %s (%s: %s); running it anyway",
                        req.rpc, req.tool, req.agent_id, decision.outcome.upper(), decision.rule, decision.reason)
            record = replace(record, enforced=False)
        elif decision.outcome == "block":
            blocked = ExecuteResult(decision, "blocked", record.event_id, error=decision.reason)
            await self.ledger.first_result(tx, req, admitted.task, decision, "done", blocked)
            appended = await self.journal.append(record)
            await self._commit(tx, req, decision, t0)  # the counted call is explained by the block
            return replace(blocked, appended=appended)
        elif decision.outcome == "escalate":
            # The approval binds the exact call and its context (approvals.py);
            # its notification links carry a single-use token, kept hashed.
            approval = self.approvals.new_approval(req, admitted, decision, self.clock())
            link_token = new_link_token()
            await tx.create_approval(approval, link_token_sha256=link_token_hash(link_token))
            await self.ledger.first_result(tx, req, admitted.task, decision, "pending_approval", ExecuteResult(
                decision, "pending_approval", record.event_id, approval_id=approval.approval_id))
            appended = await self.journal.append(replace(record, hitl_approval_id=approval.approval_id))
            await self._commit(tx, req, decision, t0)
            self.approvals.created(approval, link_token)
            return ExecuteResult(decision, "pending_approval", appended.event_id,
                                 approval_id=approval.approval_id, appended=appended)

        await self.ledger.before_run(tx, req, admitted.tool, admitted.task, decision)

        async def authorise() -> None:
            await self.journal.append(record)
            await tx.commit()

        return await run_recorded(self.run_approved, self.ledger, tx, req, admitted.tool, admitted.task, decision,
                                  authorise(), active.registry.tools_dir, t0)

    async def _record_call(self, req: CallRequest, admitted: Admitted, decision: Decision, tx: StoreTx,
                           t0: float, now: float) -> None:
        """The call joins its task's history. Should the store fail, nothing
        runs and nothing was logged yet: log the failure, naming the decision."""
        try:
            await tx.record_call(req.task_id, at=now, tool=req.tool, outcome=decision.outcome,
                                 amount=call_amount(req.args, admitted.tool),
                                 resource=call_resource(req.args, admitted.tool))
        except StoreError as e:
            await self.journal.append(rejected_record(
                req.rpc, req.agent_id, req.task_id, req.tool, payload(req), e, now=self.clock(),
                policy_revision=decision.policy_revision, t0=t0, decision_id=decision.decision_id,
                principal=req.principal))
            raise

    async def _commit(self, tx: StoreTx, req: CallRequest, decision: Decision, t0: float) -> None:
        """Commit after the decision's append. Should the commit fail, the log
        shows a decision whose state is missing: say so in the log too."""
        try:
            await tx.commit()
        except StoreError as e:
            await self.journal.append(rejected_record(
                req.rpc, req.agent_id, req.task_id, req.tool, payload(req), e, now=self.clock(),
                policy_revision=decision.policy_revision, t0=t0, decision_id=decision.decision_id,
                principal=req.principal))
            raise

