"""What the pipeline keeps about each executed call, beside the audit log:
the first result of an idempotency key, and the compensation a write needs
if it must be undone (the rollback engine's saga steps).

Invariants (enforcer.state.store has the ordering table):
- a key is claimed, and a write's compensation registered, in the
  transaction that commits after the call's decision is durable, so before
  the tool runs: a call that dies mid-run leaves both behind (outcome
  unknown), never neither;
- the first result is saved once the call ended, errors and blocks too
  (Stripe's rule); a rejected request (bad input) saves nothing;
- a repeat with the same key and arguments returns that result and runs
  nothing (a `duplicate` entry points to the first call); the same key with
  other arguments is IdempotencyConflict (ALREADY_EXISTS); a repeat while
  the first runs waits for it, or is CallInFlight (ABORTED) at its deadline;
- an escalated call keeps its key through the approval: a repeat answers
  with the approval's state, and once the approved call ran, its result;
- the key reaches the tool's connectors as `Idempotency-Key`, derived from
  agent, task and key, so the world deduplicates too and keys of two tasks
  never meet upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from enforcer.audit.records import DuplicateRecord, ExecutionRecord, timestamp
from enforcer.errors import CallInFlight, IdempotencyConflict, InvalidRequest
from enforcer.manifests import ToolSpec
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.payload import args_digest
from enforcer.pipeline.request import CallRequest, ExecuteResult
from enforcer.policy.decision import Decision
from enforcer.state.store import CompensationRecord, IdempotencyRecord, StateStore, StoreTx, Task

log = logging.getLogger(__name__)

# Printable ASCII without spaces, as the IETF draft and Stripe allow.
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# How long a repeat waits for the first call when its caller set no deadline.
DEFAULT_WAIT_S = 60.0
MAX_TOKEN_CHARS = 1024


def check_key(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidRequest("idempotency_key", "must be 1 to 255 printable ASCII characters without spaces")


def derived_key(agent_id: str, task_id: str, key: str) -> str:
    """The Idempotency-Key the tool's connectors send for this call."""
    return "aecl-" + hashlib.sha256(f"{agent_id}\0{task_id}\0{key}".encode()).hexdigest()[:32]


def rollback_token(output: dict[str, Any] | None) -> str | None:
    """What the tool returned for its compensation: a string field
    `rollback_token` of its output (bounded); anything else is none."""
    token = output.get("rollback_token") if isinstance(output, dict) else None
    return token if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS else None


def result_doc(r: ExecuteResult) -> dict[str, Any]:
    return {"status": r.status, "output": r.output, "error": r.error, "approval_id": r.approval_id,
            "sandbox_id": r.sandbox_id, "output_truncated": r.output_truncated, "rollback_token": r.rollback_token,
            "decision": r.decision.explanation(), "event_id": r.event_id}


def result_from_doc(doc: dict[str, Any], *, event_id: str) -> ExecuteResult:
    d = dict(doc["decision"])  # every saved result carries its decision (claims too)
    decision = Decision(outcome=d["outcome"], reason=d["reason"], risk_score=d["risk_score"], gate=d["gate"],
                        policy_revision=d["policy_revision"], decision_id=d["decision_id"],
                        risk_flags=tuple(d["risk_flags"]), approval_ttl_seconds=d["approval_ttl_seconds"],
                        rule=d["rule"], risk_weights=dict(d["risk_weights"]), shadow=d["shadow"])
    return ExecuteResult(decision, doc["status"], event_id, output=doc.get("output"), error=doc.get("error") or "",
                         approval_id=doc.get("approval_id") or "", sandbox_id=doc.get("sandbox_id") or "",
                         output_truncated=bool(doc.get("output_truncated")),
                         rollback_token=doc.get("rollback_token"), duplicate=True)


class CallLedger:
    def __init__(self, store: StateStore, journal: Journal, clock: Callable[[], float], *,
                 retention_s: float) -> None:
        self.store = store
        self.journal = journal
        self.clock = clock
        self.retention_s = retention_s
        # (agent, task, key) -> set once the first call's result is saved.
        self._running: dict[tuple[str, str, str], asyncio.Event] = {}

    # -- inside the call's transaction -------------------------------------------

    async def first_result(self, tx: StoreTx, req: CallRequest, task: Task, decision: Decision,
                           status: str, result: ExecuteResult | dict[str, Any]) -> None:
        """A call decided without running (block, escalation): its key keeps this answer."""
        if not req.idempotency_key:
            return
        doc = result if isinstance(result, dict) else result_doc(result)
        await tx.put_idempotency(self._record(req, task, decision, status, doc))

    async def before_run(self, tx: StoreTx, req: CallRequest, tool: ToolSpec, task: Task,
                         decision: Decision) -> None:
        """The call is about to run: claim its key, register its compensation."""
        if req.idempotency_key:
            existing = await tx.get_idempotency(req.agent_id, req.task_id, req.idempotency_key)
            if existing is None:
                # The decision now: a restart that finds the call still running answers with it.
                await tx.put_idempotency(self._record(req, task, decision, "running",
                                                      {"decision": decision.explanation()}))
            else:  # an escalated call's key, now that its approval runs it
                await tx.finish_idempotency(req.agent_id, req.task_id, req.idempotency_key, status="running",
                                            result=existing.result or {})
            self._running.setdefault(self._slot(req), asyncio.Event())
        if tool.access == "write":
            c = tool.compensation
            await tx.register_compensation(CompensationRecord(
                decision_id=req.call_id or decision.decision_id, task_id=req.task_id, agent_id=req.agent_id, seq=0, tool=req.tool,
                args=req.args, idempotency_key=self.key_for(req),
                compensation=None if c is None else c.model_dump(by_alias=True), irreversible=tool.irreversible,
                outcome="running", rollback_token=None, executed_at=self.clock()))

    def key_for(self, req: CallRequest) -> str:
        """The key the tool's connectors send (empty: the call has none)."""
        return derived_key(req.agent_id, req.task_id, req.idempotency_key) if req.idempotency_key else ""

    # -- after the execution entry is durable ------------------------------------------

    async def after_run(self, req: CallRequest, tool: ToolSpec, result: ExecuteResult) -> None:
        await self._finish(req, tool, result.status, result.rollback_token, result_doc(result))

    async def after_crash(self, req: CallRequest, tool: ToolSpec, decision: Decision, error: BaseException) -> None:
        """run raised after (or instead of) its authorisation: what exists is
        marked (a write's outcome unknown); what was rolled back is absent."""
        status = "unknown" if tool.access == "write" else "failed"
        doc = {"status": status, "output": None, "error": f"the call did not finish: {type(error).__name__}",
               "approval_id": "", "sandbox_id": "", "output_truncated": False, "rollback_token": None,
               "decision": decision.explanation(), "event_id": ""}
        await self._finish(req, tool, status, None, doc)

    async def _finish(self, req: CallRequest, tool: ToolSpec, status: str, token: str | None,
                      doc: dict[str, Any]) -> None:
        try:
            async with self.store.transaction() as tx:
                if tool.access == "write":
                    await tx.finish_compensation(req.call_id or doc["decision"]["decision_id"], outcome=_outcome(status),
                                                 rollback_token=token, now=self.clock())
                if req.idempotency_key:
                    await tx.finish_idempotency(req.agent_id, req.task_id, req.idempotency_key, status="done",
                                                result=doc)
                await tx.commit()
        finally:
            event = self._running.pop(self._slot(req), None)
            if event is not None:
                event.set()

    def forget(self, req: CallRequest) -> None:
        """The call's claim was rolled back: nobody waits on it any more."""
        event = self._running.pop(self._slot(req), None)
        if event is not None:
            event.set()

    # -- a repeat -------------------------------------------------------------------------

    async def lookup(self, tx: StoreTx, req: CallRequest) -> IdempotencyRecord | None:
        if not req.idempotency_key:
            return None
        return await tx.get_idempotency(req.agent_id, req.task_id, req.idempotency_key)

    async def duplicate(self, req: CallRequest, rec: IdempotencyRecord, t0: float,
                        approval_state: Callable[[str], Any]) -> ExecuteResult:
        """Answer a repeat from the first call, or refuse it; logged either way
        by the caller (refusals) or here (the answer)."""
        if rec.tool != req.tool or rec.args_digest != args_digest(req.args):
            raise IdempotencyConflict(f"idempotency_key {req.idempotency_key!r} was used for another call "
                                      f"({rec.tool}, arguments {rec.args_digest}) in this task")
        while rec.status == "running":
            rec = await self._wait(req, rec)
        doc = rec.result or {}
        if rec.status == "pending_approval":
            doc = await approval_state(doc.get("approval_id", ""), doc)
        appended = await self.journal.append(DuplicateRecord(
            timestamp=timestamp(self.clock()), agent_id=req.agent_id, task_id=req.task_id, principal=req.principal,
            rpc=req.rpc, action_name=req.tool, input_payload={"args": req.args}, policy_applied=doc.get(
                "decision", {}).get("policy_revision", ""), outcome="duplicate",
            reason=f"answered from the first call with this idempotency key ({rec.decision_id}); nothing ran",
            latency_ms=round((time.perf_counter() - t0) * 1000, 3), decision_id=rec.decision_id,
            hitl_approval_id=doc.get("approval_id") or None, rollback_token=doc.get("rollback_token"),
            idempotency_key=req.idempotency_key, args_digest=rec.args_digest,
            original_decision_id=rec.decision_id, original_event_id=doc.get("event_id") or ""))
        return result_from_doc(doc, event_id=appended.event_id)

    async def _wait(self, req: CallRequest, rec: IdempotencyRecord) -> IdempotencyRecord:
        event = self._running.get(self._slot(req))
        remaining = (req.deadline - time.monotonic()) if req.deadline is not None else DEFAULT_WAIT_S
        if event is None or remaining <= 0:
            raise CallInFlight(f"the first call with idempotency_key {req.idempotency_key!r} "
                               f"({rec.decision_id}) is still running; retry later")
        try:
            await asyncio.wait_for(asyncio.shield(event.wait()), remaining)
        except TimeoutError:
            raise CallInFlight(f"the first call with idempotency_key {req.idempotency_key!r} "
                               f"({rec.decision_id}) is still running; retry later") from None
        again = await self.store.get_idempotency(req.agent_id, req.task_id, req.idempotency_key)
        if again is None:  # the first call's claim was rolled back: it never ran
            raise CallInFlight(f"the first call with idempotency_key {req.idempotency_key!r} did not run "
                               "(its authorisation failed); retry")
        return again

    # -- start-up ---------------------------------------------------------------------------

    async def recover(self, *, revision: str) -> None:
        """Calls that were running when the service stopped: each gets an
        `execution` entry (outcome unknown), then is marked so."""
        now = self.clock()
        running = await self.store.compensations_where(outcome=("running",))
        await asyncio.gather(*(self.journal.append(ExecutionRecord(
            timestamp=timestamp(now), agent_id=c.agent_id, task_id=c.task_id, rpc="Recover", action_name=c.tool,
            input_payload={"args": c.args}, policy_applied=revision, outcome="unknown",
            reason="the service stopped while the call ran: its outcome is unknown (roll it back, or check)",
            decision_id=c.decision_id, cause="service_stopped")) for c in running))
        await self.store.unknown_after_restart(now=now)

    async def prune(self, interval_s: float) -> None:
        """Run until cancelled: forget keys past their retention, every interval."""
        while True:
            try:
                await self.store.prune_idempotency(now=self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retried at the next interval
                log.exception("pruning idempotency keys failed")
            await asyncio.sleep(interval_s)

    # -- helpers ------------------------------------------------------------------------------

    def _slot(self, req: CallRequest) -> tuple[str, str, str]:
        return (req.agent_id, req.task_id, req.idempotency_key)

    def _record(self, req: CallRequest, task: Task, decision: Decision, status: str,
                doc: dict[str, Any] | None) -> IdempotencyRecord:
        now = self.clock()
        return IdempotencyRecord(req.agent_id, req.task_id, req.idempotency_key, req.tool, args_digest(req.args),
                                 decision.decision_id, status, doc, now,  # type: ignore[arg-type]
                                 max(now, task.expires_at) + self.retention_s)


def _outcome(status: str) -> str:
    return {"succeeded": "succeeded", "unknown": "unknown"}.get(status, "failed")
