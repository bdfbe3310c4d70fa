"""Stage 5, the approval loop: an escalated call waits for a human, then
runs exactly once. Every front end (gRPC's ApprovalService and the agent's
GetExecution/WaitForExecution, the console, the CLI) goes through this one
object.

    escalate (dispatch.py)  ->  pending
    resolve (a human)       ->  approved | rejected     (expired if too late)
    sweep (the clock)       ->  expired
    revoke (an admin)       ->  cancelled
    run (the service)       ->  executing -> executed | failed

Invariants:
- each transition is one compare-and-swap in the store (enforcer.state.
  store.APPROVAL_TRANSITIONS), inside a transaction that commits only after
  the entry explaining it is durable: an `approval` entry (resolved,
  expired, cancelled, failed before running), or the decision made again
  (executing) and the execution entry (executed, failed). All carry
  hitl_approval_id. So 20 approvers clicking at once, or an approval racing
  its expiry, end in exactly one outcome, and the call runs at most once;
- expiry is checked on the service's clock when a human resolves and again
  when the call starts; nothing is approved by timeout, an expired approval
  is never approved, and an approval never outlives its task;
- the call that runs is exactly the one approved (tool and arguments, their
  digest checked again), by the agent's principal, after the policy in force
  is evaluated again with the approval in its input: a block now wins; an
  approval satisfies an escalation, never a block;
- an approval is used only by the service: an agent cannot resolve one, and
  an Execute that names one is refused (FAILED_PRECONDITION), so a resumed
  framework never runs a side effect twice;
- at start-up (recover) approved calls not yet started run once; a call
  that was executing when the service died is marked failed with its outcome
  unknown (never run twice).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from enforcer.audit.records import ApprovalRecord, Principal, timestamp
from enforcer.errors import AeclError, ApprovalStateError, InvalidRequest, NotFound, PermissionDenied, WatcherLagged
from enforcer.identity.authenticate import may_approve
from enforcer.pipeline.admit import Admitted
from enforcer.pipeline.decide import decide
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.ledger import CallLedger
from enforcer.pipeline.payload import args_digest
from enforcer.pipeline.policy_input import MAX_HISTORY, call_amount, call_resource, history_entry
from enforcer.pipeline.rejection import rejected_record
from enforcer.pipeline.request import CallRequest, ExecuteResult
from enforcer.pipeline.run_approved import RunApproved, run_recorded
from enforcer.pipeline.validate import require_id, validate_call
from enforcer.config import LimitsConfig
from enforcer.policy.decision import Decision
from enforcer.policy.holder import PolicyHolder
from enforcer.state.store import Approval, StateStore

log = logging.getLogger(__name__)

MAX_COMMENT_BYTES = 1024
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
# A watcher this far behind is dropped (it lists again) rather than holding memory.
WATCH_QUEUE = 1000


def link_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_link_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


class Approvals:
    def __init__(self, *, journal: Journal, store: StateStore, policy: PolicyHolder, run_approved: RunApproved,
                 limits: LimitsConfig, clock: Callable[[], float], service_principal: Principal,
                 ledger: CallLedger) -> None:
        self.journal = journal
        self.store = store
        self.policy = policy
        self.run_approved = run_approved
        self.limits = limits
        self.clock = clock
        self.service_principal = service_principal
        self.ledger = ledger
        self._watchers: set[asyncio.Queue] = set()
        self._runs: set[asyncio.Task] = set()
        # Told of each new approval with its link token (the notifier).
        self.on_created: list[Callable[[Approval, str], None]] = []
        # How an approved approval of another kind than "call" is carried
        # out (the rollback engine registers "compensation" and "manual").
        self.runners: dict[str, Callable[[str], Awaitable[Approval | None]]] = {}

    # -- creation (from dispatch) ----------------------------------------------

    def new_approval(self, req: CallRequest, admitted: Admitted, decision: Decision, now: float) -> Approval:
        """The approval an escalating decision creates: the exact call, why,
        and what the task did before; it expires with its task at the latest."""
        task = admitted.task
        return Approval(
            approval_id=new_approval_id(), task_id=req.task_id, decision_id=decision.decision_id,
            action_name=req.tool, created_at=now,
            expires_at=min(now + decision.approval_ttl_seconds, task.expires_at), status="pending",
            agent_id=req.agent_id, args=req.args, args_digest=args_digest(req.args), principal=req.principal,
            reason=decision.reason, gate=decision.gate, rule=decision.rule, risk_score=decision.risk_score,
            risk_flags=decision.risk_flags, risk_weights=dict(decision.risk_weights),
            policy_revision=decision.policy_revision, untrusted_input_source=req.untrusted_input_source,
            triggering_input=req.triggering_input, idempotency_key=req.idempotency_key,
            declared_goal=task.declared_goal, history=tuple(history_entry(c) for c in admitted.history),
            updated_at=now,
        )

    def created(self, approval: Approval, link_token: str) -> None:
        """After the escalation committed: watchers and notifiers hear of it."""
        self._publish(approval)
        for hook in self.on_created:
            try:
                hook(approval, link_token)
            except Exception:  # noqa: BLE001 - a notifier's bug never undoes an escalation
                log.exception("approval %s: a notification hook failed", approval.approval_id)

    # -- reads -----------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval:
        require_id("approval_id", approval_id)
        a = await self.store.get_approval(approval_id)
        if a is None:
            raise NotFound(f"approval_id: approval '{approval_id}' does not exist")
        return a

    async def list(self, *, status: str | None = None, agent_id: str | None = None, task_id: str | None = None,
                   page_size: int = 0, page_token: str = "") -> tuple[list[Approval], str]:
        """Newest first; the token is opaque to callers ("<created_at>/<id>")."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidRequest("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        for name, value in (("agent_id", agent_id), ("task_id", task_id)):
            if value:
                require_id(name, value)
        size = page_size or DEFAULT_PAGE_SIZE
        before = _parse_page_token(page_token) if page_token else None
        rows = await self.store.list_approvals(status=status, agent_id=agent_id or None, task_id=task_id or None,
                                               limit=size + 1, before=before)
        more = len(rows) > size
        rows = rows[:size]
        token = f"{rows[-1].created_at!r}/{rows[-1].approval_id}" if more and rows else ""
        return rows, token

    async def pending(self) -> list[Approval]:
        return await self.store.approvals_with_status(("pending",))

    async def execution(self, agent_id: str, task_id: str, approval_id: str) -> Approval:
        """An agent's view of its escalated call: only the approval's own task may ask."""
        a = await self.get(approval_id)
        if a.task_id != task_id or a.agent_id != agent_id:
            raise PermissionDenied(f"approval '{approval_id}' belongs to another task")
        return a

    # -- watching --------------------------------------------------------------

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[asyncio.Queue]:
        """A queue of every approval as each change commits (None: dropped, lagging)."""
        q: asyncio.Queue = asyncio.Queue(maxsize=WATCH_QUEUE + 1)
        self._watchers.add(q)
        try:
            yield q
        finally:
            self._watchers.discard(q)

    async def changes(self, *, include_pending: bool = False) -> AsyncIterator[Approval]:
        """Every change as it commits, the pending approvals first if asked.
        Raises WatcherLagged when the consumer falls too far behind."""
        async with self.watch() as q:
            seen: dict[str, int] = {}
            if include_pending:
                for a in await self.pending():
                    seen[a.approval_id] = a.version
                    yield a
            while True:
                a = await q.get()
                if a is None:
                    raise WatcherLagged("the watcher fell behind and was dropped: list the approvals again")
                if seen.get(a.approval_id, 0) >= a.version:
                    continue
                seen[a.approval_id] = a.version
                yield a

    async def follow(self, approval_id: str) -> AsyncIterator[Approval]:
        """One approval: its state now, then each change, until a final state."""
        async with self.watch() as q:
            a = await self.get(approval_id)
            yield a
            version = a.version
            while not a.final:
                changed = await q.get()
                if changed is None:  # lagging: read it again rather than miss the end
                    changed = await self.get(approval_id)
                    self._drain(q)
                if changed.approval_id != approval_id or changed.version <= version:
                    continue
                a, version = changed, changed.version
                yield a

    def _drain(self, q: asyncio.Queue) -> None:
        while not q.empty():
            q.get_nowait()
        self._watchers.add(q)

    def _publish(self, approval: Approval) -> None:
        for q in list(self._watchers):
            if q.qsize() >= WATCH_QUEUE:
                self._watchers.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(approval)

    # -- resolution (a human) ---------------------------------------------------

    async def resolve(self, approval_id: str, *, approve: bool, comment: str, approver: Principal,
                      link_token: str | None = None, rpc: str = "ResolveApproval") -> tuple[Approval, str]:
        """Approve or reject a pending approval; returns it and the event id
        of its `approval` entry. Refusals are logged (`rejected`) and raised:
        NotFound, ApprovalStateError (expired, resolved already, cancelled,
        a used or wrong link token), NotAuthorised (not an approver,
        self-approval), InvalidRequest (comment)."""
        t0 = time.perf_counter()
        now = self.clock()
        expired: tuple[Approval, str] | None = None
        try:
            require_id("approval_id", approval_id)
            if len(comment.encode()) > MAX_COMMENT_BYTES:
                raise InvalidRequest("comment", f"longer than {MAX_COMMENT_BYTES} bytes")
            async with self.store.transaction() as tx:
                a = await tx.get_approval(approval_id)
                if a is None:
                    raise NotFound(f"approval_id: approval '{approval_id}' does not exist")
                may_approve(approver, self.policy.current.directory.approver_agents.get(approver.id, frozenset()),
                            a.agent_id)
                if link_token is not None and not await tx.consume_link_token(
                        approval_id, link_token_hash(link_token), now=now):
                    raise ApprovalStateError("link_used", f"approval {approval_id}: this link was used already "
                                                          "or has expired; open the approval in the console")
                if a.status == "pending" and a.expires_at <= now:
                    moved = await tx.transition_approval(approval_id, expect="pending", to="expired", now=now)
                    assert moved is not None  # the transaction holds the row
                    appended = await self.journal.append(self._record(
                        moved, "expired", "pending", self.service_principal, rpc, t0,
                        f"expired at {timestamp(a.expires_at)}, before {approver.id} resolved it"))
                    await tx.commit()
                    expired = (moved, appended.event_id)
                else:
                    if a.status != "pending":
                        raise ApprovalStateError(a.status, _not_pending(a))
                    to = "approved" if approve else "rejected"
                    moved = await tx.transition_approval(approval_id, expect="pending", to=to, now=now,
                                                         approver=approver, comment=comment)
                    if moved is None:
                        raise ApprovalStateError("raced", f"approval {approval_id} changed while it was resolved")
                    appended = await self.journal.append(self._record(
                        moved, to, "pending", approver, rpc, t0, f"{to} by {approver.kind} {approver.id}"
                        + (f": {comment}" if comment else "")))
                    await tx.commit()
        except AeclError as e:
            await self._refused(rpc, approval_id, e, t0, approver, {"approve": approve, "comment": comment[:1024]})
            raise
        if expired is not None:
            self._publish(expired[0])
            error = ApprovalStateError("expired", f"approval {approval_id} expired at "
                                                  f"{timestamp(expired[0].expires_at)}: it can no longer be approved")
            await self._refused(rpc, approval_id, error, t0, approver, {"approve": approve})
            raise error
        self._publish(moved)
        if moved.status == "approved":
            self._start_run(moved)
        return moved, appended.event_id

    # -- expiry (the clock) -----------------------------------------------------

    async def expire_due(self) -> list[Approval]:
        """Mark every pending approval past its expiry expired (one entry each)."""
        t0 = time.perf_counter()
        now = self.clock()
        async with self.store.transaction() as tx:
            moved = await tx.expire_due_approvals(now=now)
            if not moved:
                return []
            await asyncio.gather(*(self.journal.append(self._record(
                a, "expired", "pending", self.service_principal, "ExpireApprovals", t0,
                f"expired at {timestamp(a.expires_at)} without a decision")) for a in moved))
            await tx.commit()
        for a in moved:
            self._publish(a)
        return moved

    async def sweep(self, interval_s: float) -> None:
        """Run until cancelled: expire what is due, every interval."""
        while True:
            try:
                await self.expire_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failing store is logged and retried
                log.exception("approval expiry sweep failed; retrying in %.1f s", interval_s)
            await asyncio.sleep(interval_s)

    # -- cancellation (revocation) ---------------------------------------------

    def cancelled_record(self, a: Approval, principal: Principal | None, reason: str) -> ApprovalRecord:
        return self._record(a, "cancelled", "pending", principal, "Revoke", time.perf_counter(), reason)

    def published(self, approvals: list[Approval]) -> None:
        for a in approvals:
            self._publish(a)

    # -- resume attempts (Execute naming an approval) ----------------------------

    async def refuse_resume(self, req: CallRequest) -> None:
        """An Execute that names an approval never runs anything: the service
        runs approved calls itself, once. Always raises, saying why."""
        a = await self.get(req.approval_id)
        if a.task_id != req.task_id or a.agent_id != req.agent_id:
            raise PermissionDenied(f"approval '{req.approval_id}' belongs to another task")
        if a.action_name != req.tool or a.args_digest != args_digest(req.args):
            raise ApprovalStateError("mismatched_call", f"approval {a.approval_id} was made for another call "
                                                        f"({a.action_name}, arguments {a.args_digest}); it "
                                                        "cannot be used for this one")
        if a.final:
            raise ApprovalStateError("consumed", f"approval {a.approval_id} is {a.status}: it cannot be used "
                                                 "again; read its result with GetExecution")
        raise ApprovalStateError("pending", f"approval {a.approval_id} is {a.status}: the service runs its call "
                                            "once, when approved; follow it with WaitForExecution")

    # -- running an approved call (the service) -----------------------------------

    def _start_run(self, a: Approval) -> None:
        runner = self.runners.get(a.kind, self.run)
        task = asyncio.get_running_loop().create_task(runner(a.approval_id), name=f"aecl-run-{a.approval_id}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def run(self, approval_id: str, *, compensation: dict[str, Any] | None = None,
                  use_ledger: bool = True) -> Approval | None:
        """Run an approved call once: check it again, decide again with the
        approval in the input, then execute. Returns the final approval, or
        None when it was not (or no longer) approved. `compensation`: the
        call is a rollback step (input.compensation; not itself registered
        for rollback, so `use_ledger` is False)."""
        t0 = time.perf_counter()
        now = self.clock()
        active = self.policy.current
        final: dict[str, Any] | None = None
        async with self.store.transaction() as tx:
            a = await tx.get_approval(approval_id)
            if a is None or a.status != "approved":
                return None
            req = CallRequest(rpc="Rollback" if compensation is not None else "Execute", task_id=a.task_id, agent_id=a.agent_id, tool=a.action_name,
                              args=a.args, untrusted_input_source=a.untrusted_input_source,
                              triggering_input=a.triggering_input, idempotency_key=a.idempotency_key,
                              principal=a.principal, approval_id=a.approval_id, call_id=a.decision_id)
            task = await self.store.get_task(a.task_id)
            why = self._cannot_start(a, task, now)
            tool = None
            if why is None:
                try:
                    tool = validate_call(req, active.registry, self.limits)
                except AeclError as e:
                    why = f"the call is no longer valid under the policy in force: {e}"
            if why is not None:
                return await self._fail_unstarted(tx, a, why, t0, now)
            assert task is not None and tool is not None
            calls = await tx.list_calls(task.task_id, limit=MAX_HISTORY + 1)
            admitted = Admitted(tool, task, tuple(calls[-MAX_HISTORY:]), history_truncated=len(calls) > MAX_HISTORY)
            decision, record = await decide(req, active, admitted, now, t0, approval=_policy_view(a),
                                            compensation=compensation)
            record = replace(record, hitl_approval_id=a.approval_id, enforced=True)
            if decision.outcome != "approve":
                # The policy in force wins over the old approval.
                final = _result("blocked", decision, event_id=record.event_id,
                                error=f"the policy in force {decision.outcome}s this call now "
                                      f"({decision.gate}/{decision.rule}): {decision.reason}")
                moved = await tx.transition_approval(a.approval_id, expect="approved", to="failed", now=now,
                                                     result=final)
                await self.journal.append(record)
                await tx.commit()
                assert moved is not None
                self._publish(moved)
                return moved
            await tx.record_call(task.task_id, at=now, tool=req.tool, outcome="approve",
                                 amount=call_amount(req.args, tool), resource=call_resource(req.args, tool))
            executing = await tx.transition_approval(a.approval_id, expect="approved", to="executing", now=now)
            assert executing is not None
            if use_ledger:
                await self.ledger.before_run(tx, req, tool, task, decision)

            async def authorise() -> None:
                await self.journal.append(record)
                await tx.commit()
                self._publish(executing)

            try:
                if use_ledger:
                    result = await run_recorded(self.run_approved, self.ledger, tx, req, tool, task, decision,
                                                authorise(), active.registry.tools_dir, t0)
                else:
                    result = await self.run_approved.run(req, tool, task, decision, authorised=authorise(),
                                                         tools_dir=active.registry.tools_dir, t0=t0)
            except BaseException as e:  # noqa: BLE001 - the approval must not stay executing
                return await self._after_crash(a.approval_id, tx, e, t0)
        return await self._finish(executing, result)

    async def _finish(self, a: Approval, result: ExecuteResult) -> Approval:
        status = "executed" if result.status == "succeeded" else "failed"
        doc = _result(result.status, result.decision, output=result.output, error=result.error,
                      sandbox_id=result.sandbox_id, output_truncated=result.output_truncated,
                      event_id=result.event_id, finished_at=self.clock())
        async with self.store.transaction() as tx:
            moved = await tx.transition_approval(a.approval_id, expect="executing", to=status, now=self.clock(),
                                                 result=doc)
            await tx.commit()  # the execution entry, which explains it, is durable already
        assert moved is not None
        self._publish(moved)
        return moved

    async def _after_crash(self, approval_id: str, tx: Any, error: BaseException, t0: float) -> Approval | None:
        """run_approved raised: either the authorisation never became durable
        (nothing ran: still approved, rolled back) or the execution entry was
        written and the RPC-level error followed. Either way: failed, said why."""
        if not tx.done:
            await tx.rollback()
        a = await self.store.get_approval(approval_id)
        if a is None or a.final:
            if isinstance(error, asyncio.CancelledError):
                raise error
            return a
        expect = a.status
        why = (f"the call did not run: {type(error).__name__}: {error}" if expect == "approved"
               else f"the call was interrupted ({type(error).__name__}: {error}); its outcome is unknown")
        async with self.store.transaction() as tx2:
            moved = await tx2.transition_approval(
                approval_id, expect=expect, to="failed", now=self.clock(),
                result=_result("failed", None, error=why, cause="unknown" if expect == "executing" else "not_run"))
            if moved is not None:
                await self.journal.append(self._record(moved, "failed", expect, self.service_principal,
                                                       "Execute", t0, why))
                await tx2.commit()
        if moved is not None:
            self._publish(moved)
        if isinstance(error, asyncio.CancelledError):
            raise error
        return moved

    def _cannot_start(self, a: Approval, task: Any, now: float) -> str | None:
        if a.expires_at <= now:
            return f"the approval expired at {timestamp(a.expires_at)} before its call could start"
        if task is None:
            return f"task {a.task_id} no longer exists"
        if task.expires_at <= now:
            return f"task {a.task_id} ended at {timestamp(task.expires_at)} before the call could start"
        if args_digest(a.args) != a.args_digest:
            return "the stored call does not match its digest: refusing to run it"
        return None

    async def _fail_unstarted(self, tx: Any, a: Approval, why: str, t0: float, now: float) -> Approval:
        record = self._record(a, "failed", "approved", self.service_principal, "Execute", t0, why)
        moved = await tx.transition_approval(a.approval_id, expect="approved", to="failed", now=now,
                                             result=_result("failed", None, error=why, cause="not_run",
                                                            event_id=record.event_id))
        assert moved is not None
        await self.journal.append(record)
        await tx.commit()
        self._publish(moved)
        return moved

    async def state_for_duplicate(self, approval_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A repeat of an escalated call (same idempotency key): the answer
        follows its approval: still waiting, its run's result, or why it
        will never run."""
        a = await self.store.get_approval(approval_id)
        if a is None or a.status in ("pending", "approved", "executing"):
            return doc
        r = a.result or {}
        if a.status in ("executed", "failed") and r.get("status"):
            return {**doc, "status": r["status"], "output": r.get("output"), "error": r.get("error") or "",
                    "sandbox_id": r.get("sandbox_id") or "", "output_truncated": bool(r.get("output_truncated")),
                    "decision": r.get("decision") or doc["decision"], "event_id": r.get("event_id") or ""}
        who = f" by {a.approver.id}" if a.approver is not None else ""
        return {**doc, "status": "blocked", "error": f"approval {approval_id} was {a.status}{who}"
                + (f": {a.comment}" if a.comment else "")}

    # -- start-up ----------------------------------------------------------------

    async def recover(self) -> None:
        """Before serving: a call that was executing when the service stopped
        has an unknown outcome (failed, never run again); approved calls not
        yet started run now, once."""
        t0 = time.perf_counter()
        for a in await self.store.approvals_with_status(("executing",)):
            why = ("the service stopped while the call was running: its outcome is unknown (it is not run "
                   "again; check the target system)")
            async with self.store.transaction() as tx:
                moved = await tx.transition_approval(a.approval_id, expect="executing", to="failed",
                                                     now=self.clock(),
                                                     result=_result("failed", None, error=why, cause="unknown"))
                if moved is None:
                    continue
                await self.journal.append(self._record(moved, "failed", "executing", self.service_principal,
                                                       "Recover", t0, why))
                await tx.commit()
            log.warning("approval %s: %s", a.approval_id, why)
        for a in await self.store.approvals_with_status(("approved",)):
            log.info("approval %s: approved before the restart, running it now", a.approval_id)
            self._start_run(a)

    async def drain(self) -> None:
        """At shutdown: let running approved calls end (they are cancelled by the caller's shutdown)."""
        if self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)

    # -- records -------------------------------------------------------------------

    def _record(self, a: Approval, transition: str, from_status: str, principal: Principal | None, rpc: str,
                t0: float, reason: str) -> ApprovalRecord:
        return ApprovalRecord(
            timestamp=timestamp(self.clock()), agent_id=a.agent_id, task_id=a.task_id, principal=principal,
            rpc=rpc, action_name=a.action_name, input_payload={"args_digest": a.args_digest},
            policy_applied=self.policy.current.revision, risk_score=a.risk_score, outcome=transition,
            reason=reason, latency_ms=round((time.perf_counter() - t0) * 1000, 3), decision_id=a.decision_id,
            hitl_approval_id=a.approval_id, transition=transition,  # type: ignore[arg-type]
            from_status=from_status, args_digest=a.args_digest, expires_at=timestamp(a.expires_at),
            comment=a.comment if transition in ("approved", "rejected") else "",
        )

    async def _refused(self, rpc: str, approval_id: str, error: AeclError, t0: float, principal: Principal | None,
                       request: dict[str, Any]) -> None:
        record = rejected_record(rpc, "", "", "", request, error, now=self.clock(),
                                 policy_revision=self.policy.current.revision, t0=t0, principal=principal)
        await self.journal.append(replace(record, hitl_approval_id=approval_id[:256] or None))


def approval_json(a: Approval) -> dict[str, Any]:
    """The one JSON view of an approval (webhook payloads, the console, the
    CLI's --json): every field; created/expires/resolved as RFC 3339, the history's
    `at` and the result's `finished_at` as stored (epoch seconds). Values from the agent
    (args, triggering_input) are data: whoever renders them escapes them."""
    def principal(p: Principal | None) -> dict[str, Any] | None:
        return None if p is None else p.to_dict()
    return {
        "approval_id": a.approval_id, "status": a.status, "agent_id": a.agent_id, "task_id": a.task_id,
        "tool": a.action_name, "args": a.args, "args_digest": a.args_digest, "principal": principal(a.principal),
        "reason": a.reason, "gate": a.gate, "rule": a.rule, "risk_score": a.risk_score,
        "risk_flags": list(a.risk_flags), "risk_weights": dict(a.risk_weights),
        "policy_revision": a.policy_revision, "decision_id": a.decision_id,
        "untrusted_input_source": a.untrusted_input_source, "triggering_input": a.triggering_input,
        "idempotency_key": a.idempotency_key, "declared_goal": a.declared_goal, "history": list(a.history),
        "created_at": timestamp(a.created_at), "expires_at": timestamp(a.expires_at),
        "approver": principal(a.approver), "comment": a.comment,
        "resolved_at": None if a.resolved_at is None else timestamp(a.resolved_at),
        "result": a.result, "version": a.version, "kind": a.kind, "compensation_of": a.compensation_of,
    }


def new_approval_id() -> str:
    return "apr_" + secrets.token_hex(16)


def _not_pending(a: Approval) -> str:
    if a.status in ("approved", "rejected", "executing", "executed", "failed"):
        who = f" by {a.approver.id}" if a.approver is not None else ""
        return f"approval {a.approval_id} was resolved already{who} (now {a.status})"
    return f"approval {a.approval_id} is {a.status}: it can no longer be resolved"


def _policy_view(a: Approval) -> dict[str, Any]:
    """What the policy sees of the approval at execution (input.approval)."""
    return {
        "approval_id": a.approval_id, "status": a.status, "tool": a.action_name, "args_digest": a.args_digest,
        "approver": None if a.approver is None else {"kind": a.approver.kind, "id": a.approver.id},
        "comment": a.comment, "resolved_at": a.resolved_at, "created_at": a.created_at,
        "expires_at": a.expires_at, "decision_id": a.decision_id, "gate": a.gate, "rule": a.rule,
        "policy_revision": a.policy_revision,
    }


def _result(status: str, decision: Decision | None, *, output: dict[str, Any] | None = None, error: str = "",
            sandbox_id: str = "", output_truncated: bool = False, event_id: str = "",
            finished_at: float | None = None, cause: str = "") -> dict[str, Any]:
    return {"status": status, "output": output, "error": error, "sandbox_id": sandbox_id,
            "output_truncated": output_truncated,
            "decision": None if decision is None else decision.explanation(), "event_id": event_id,
            "finished_at": finished_at if finished_at is not None else time.time(), "cause": cause}


def _parse_page_token(token: str) -> tuple[float, str]:
    at, _, approval_id = token.partition("/")
    try:
        return float(at), approval_id
    except ValueError:
        raise InvalidRequest("page_token", "not a token from a previous response") from None


__all__ = ["Approvals", "WatcherLagged", "approval_json", "args_digest", "link_token_hash", "new_link_token"]
