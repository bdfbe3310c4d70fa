"""The enforcement pipeline: the one path every front end (gRPC today; the
approval console and MCP next) takes for StartTask, Decide and Execute.

    admit  ->  decide  ->  dispatch  ->  run-approved
    admit.py   decide.py   dispatch.py   run_approved.py

Each stage is a module with its invariants at the top; this module only
composes them and owns the error path. The invariants of the whole:
- every call that reaches the pipeline leaves an audit entry, including
  rejected input and engine failures;
- a decision is durable (fsynced) before anything executes;
- any error on the way to a decision is a BLOCK, never an APPROVE;
- every state change commits only after the entry that explains it is
  durable (enforcer.state.store has the table).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from enforcer.audit.log import AuditLog
from enforcer import __version__
from enforcer.audit.records import (AuthRefused, PolicyReload, Principal, RevocationRecord, ServiceRecord, new_id,
                                    timestamp)
from enforcer.audit.records import TaskStarted as TaskStartedRecord
from enforcer.audit.records import TokenRenewed as TokenRenewedRecord
from enforcer.config import LimitsConfig, RollbackConfig, SandboxConfig
from enforcer.connectors.proxy import Connector
from enforcer.errors import AeclError, NotAuthorised, NotFound, TaskOver, Unauthenticated
from enforcer.identity.revocations import Revocations
from enforcer.identity.tokens import TokenIssuer
from enforcer.metrics import Metrics
from enforcer.pipeline.admit import admit
from enforcer.pipeline.approvals import Approvals
from enforcer.pipeline.decide import decide
from enforcer.pipeline.dispatch import Dispatch
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.ledger import CallLedger, check_key
from enforcer.pipeline.payload import payload
from enforcer.pipeline.rejection import rejected_record
from enforcer.pipeline.rollback import RollbackEngine
from enforcer.pipeline.request import (CallRequest, DecideResult, ExecuteResult, RenewRequest, Revoked,
                                       StartTaskRequest, TaskStarted, TokenRenewed)
from enforcer.pipeline.run_approved import RunApproved
from enforcer.pipeline.validate import validate_start_task
from enforcer.policy.holder import PolicyHolder
from enforcer.policy.reload import ReloadResult
from enforcer.sandbox.backend import SandboxBackend
from enforcer.state.store import Revocation, StateStore, Task, check_owner

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        *,
        policy: PolicyHolder,
        audit: AuditLog,
        store: StateStore,
        sandbox: SandboxBackend,
        sandbox_config: SandboxConfig,
        limits: LimitsConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        tokens: TokenIssuer | None = None,
        service_id: str = "aecl",
        connectors: Mapping[str, Connector] | None = None,
        idempotency_retention_s: float = 24 * 3600,
        rollback: RollbackConfig | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.sandbox_config = sandbox_config
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.shutting_down = False
        # Issues task tokens (StartTask, RenewTaskToken); None in-process, where no transport authenticates.
        self.tokens = tokens
        # The principal of the service's own entries (start, stop, reloads it triggers).
        self.service_principal = Principal(kind="service", id=service_id)
        # What the authenticator refuses; updated here once a revocation commits.
        self.revocations = Revocations()
        self.journal = Journal(audit, metrics)
        self.run_approved = RunApproved(self.journal, sandbox, sandbox_config, lambda: self.clock(),
                                        lambda: self.shutting_down, connectors)
        self.ledger = CallLedger(store, self.journal, lambda: self.clock(), retention_s=idempotency_retention_s)
        self.approvals = Approvals(journal=self.journal, store=store, policy=policy, run_approved=self.run_approved,
                                   limits=limits, clock=lambda: self.clock(), service_principal=self.service_principal,
                                   ledger=self.ledger)
        self.dispatch = Dispatch(self.journal, self.run_approved, self.approvals, self.ledger, lambda: self.clock())
        self.rollbacks = RollbackEngine(journal=self.journal, store=store, policy=policy,
                                        run_approved=self.run_approved, approvals=self.approvals, limits=limits,
                                        config=rollback or RollbackConfig(), clock=lambda: self.clock(),
                                        metrics=metrics)

    # -- StartTask -------------------------------------------------------

    async def start_task(self, req: StartTaskRequest) -> TaskStarted:
        t0 = time.perf_counter()
        now = self.clock()
        revision = self.policy.current.revision
        task = Task(
            task_id=new_id("tsk"), agent_id=req.agent_id, declared_goal=req.declared_goal,
            declared_actions=req.declared_actions, started_at=now,
            expires_at=now + self.sandbox_config.task_timeout_s, calls_so_far=0,
            declared_resources=req.declared_resources,
        )
        try:
            validate_start_task(req)
            issued = self._issue(task, now)
        except AeclError as e:
            await self._reject("StartTask", req.agent_id, "", "", {}, e, t0, revision, req.principal)
            raise
        record = TaskStartedRecord(
            timestamp=timestamp(now), agent_id=req.agent_id, task_id=task.task_id, principal=req.principal,
            rpc="StartTask",
            input_payload={"declared_goal": req.declared_goal, "declared_actions": list(req.declared_actions),
                           "declared_resources": list(req.declared_resources)},
            policy_applied=revision, outcome="started",
            reason=f"task expires at {timestamp(task.expires_at)}", latency_ms=_ms(t0),
            token_id=issued.claims.token_id if issued else None,
            token_expires_at=timestamp(issued.claims.expires_at) if issued else None,
        )
        async with self.store.transaction() as tx:
            await tx.create_task(task)
            appended = await self.journal.append(record)
            try:
                await tx.commit()
            except AeclError as e:
                await self._reject("StartTask", req.agent_id, task.task_id, "", {}, e, t0, revision, req.principal)
                raise
        return TaskStarted(task_id=task.task_id, expires_at=task.expires_at, event_id=appended.event_id,
                           appended=appended, token=issued.token if issued else "",
                           token_expires_at=issued.claims.expires_at if issued else None)

    def _issue(self, task: Task, now: float):
        """A task token for `task`, or None when this pipeline issues none."""
        if self.tokens is None:
            return None
        manifest = self.policy.current.agents.get(task.agent_id)
        if manifest is None:
            raise NotFound(f"agent_id: no manifest for agent '{task.agent_id}'")
        try:
            return self.tokens.issue(agent_id=task.agent_id, task_id=task.task_id,
                                     scope=tuple(manifest.credential_scope), ttl_s=manifest.token_ttl_seconds,
                                     not_after=task.expires_at, now=now)
        except ValueError:  # under a microsecond of the task left: no token can be valid
            raise TaskOver(f"task {task.task_id} ends at {timestamp(task.expires_at)}: start a new task") from None

    # -- RenewTaskToken ------------------------------------------------------

    async def renew_token(self, req: RenewRequest) -> TokenRenewed:
        """A fresh token for a live task of the caller's (already
        authenticated by its credential); refused once the task is over."""
        t0 = time.perf_counter()
        now = self.clock()
        revision = self.policy.current.revision
        try:
            if self.tokens is None:
                raise NotAuthorised("no_tokens", "this service issues no task tokens")
            task = check_owner(await self.store.get_task(req.task_id), req.task_id, req.agent_id)
            if self.revocations.task_revoked(task.task_id):
                raise Unauthenticated("revoked", f"task {task.task_id} was revoked")
            if task.expires_at <= now:
                raise TaskOver(f"task {task.task_id} ended at {timestamp(task.expires_at)}: start a new task")
            issued = self._issue(task, now)
            assert issued is not None
        except AeclError as e:
            await self._reject("RenewTaskToken", req.agent_id, req.task_id, "", {}, e, t0, revision, req.principal)
            raise
        appended = await self.journal.append(TokenRenewedRecord(
            timestamp=timestamp(now), agent_id=req.agent_id, task_id=req.task_id, principal=req.principal,
            rpc="RenewTaskToken", policy_applied=revision, outcome="renewed",
            reason=f"token valid until {timestamp(issued.claims.expires_at)}", latency_ms=_ms(t0),
            token_id=issued.claims.token_id, token_expires_at=timestamp(issued.claims.expires_at),
        ))
        return TokenRenewed(token=issued.token, token_expires_at=issued.claims.expires_at,
                            event_id=appended.event_id)

    # -- revocation (AdminService) ---------------------------------------------

    async def load_revocations(self) -> None:
        """At start-up: the revocations the store holds, before any call."""
        for row in await self.store.list_revocations():
            self.revocations.add(row)

    async def revoke(self, target: str, target_id: str, reason: str, principal: Principal | None) -> Revoked:
        """Revoke a task, or an agent (every task it has, and every token,
        key and certificate it holds now). The store changes commit after
        the `revocation` entry is durable; the authenticator refuses from
        the moment the commit returns."""
        t0 = time.perf_counter()
        now = self.clock()
        revision = self.policy.current.revision
        rpc = "RevokeTask" if target == "task" else "RevokeAgent"
        try:
            async with self.store.transaction() as tx:
                if target == "task":
                    task = await self.store.get_task(target_id)
                    if task is None:
                        raise NotFound(f"task_id: task '{target_id[:128]}' does not exist")
                    tasks, agent_id = [target_id], task.agent_id
                else:
                    tasks, agent_id = await tx.live_tasks_of(target_id, now=now), target_id
                    if not tasks and target_id not in self.policy.current.agents:
                        raise NotFound(f"agent_id: no manifest and no task for agent '{target_id[:128]}'")
                row = Revocation(target, target_id, now, reason)  # type: ignore[arg-type]
                await tx.revoke(row)
                await tx.end_tasks(tasks, at=now)
                # Approvals can outlive their task: an agent's are cancelled whichever of its tasks they wait in.
                cancelled = await tx.cancel_pending_approvals(
                    tasks if target == "task" else await tx.tasks_of(target_id), now=now)
                await asyncio.gather(*(self.journal.append(self.approvals.cancelled_record(
                    a, principal, f"{rpc}: {reason or '(no reason given)'}")) for a in cancelled))
                appended = await self.journal.append(RevocationRecord(
                    timestamp=timestamp(now), agent_id=agent_id, task_id=target_id if target == "task" else "",
                    principal=principal, rpc=rpc, policy_applied=revision, outcome="revoked",
                    reason=reason or "(no reason given)", latency_ms=_ms(t0), target=target,  # type: ignore[arg-type]
                    target_id=target_id, revoked_at=timestamp(now), tasks_revoked=tuple(tasks),
                    approvals_cancelled=len(cancelled),
                ))
                await tx.commit()
        except AeclError as e:
            await self._reject(rpc, target_id if target == "agent" else "", target_id if target == "task" else "",
                               "", {"reason": reason[:1024]}, e, t0, revision, principal)
            raise
        self.revocations.add(row)
        self.approvals.published(cancelled)
        return Revoked(event_id=appended.event_id, tasks_revoked=tuple(tasks), approvals_cancelled=len(cancelled))

    async def log_auth_refused(self, rpc: str, error: Unauthenticated | NotAuthorised, *, agent_id: str,
                               task_id: str, principal: Principal | None, peer: str,
                               key_id: str | None, token_id: str | None) -> None:
        """A call the authenticator refused: logged before the refusal is
        answered, without the secret."""
        await self.journal.append(AuthRefused(
            timestamp=timestamp(self.clock()), agent_id=agent_id[:256], task_id=task_id[:256], principal=principal,
            rpc=rpc, policy_applied=self.policy.current.revision, outcome="refused", reason=str(error),
            refusal=error.reason, status="UNAUTHENTICATED" if isinstance(error, Unauthenticated)
            else "PERMISSION_DENIED", peer=peer[:256], key_id=key_id, token_id=token_id,
        ))

    # -- Decide / Execute ------------------------------------------------

    async def decide(self, req: CallRequest) -> DecideResult:
        """A dry run: the decision is logged; nothing is counted or run."""
        t0 = time.perf_counter()
        active = self.policy.current
        now = self.clock()
        try:
            admitted = await admit(req, active, self.limits, now, store=self.store, tx=None)
        except AeclError as e:
            await self._reject(req.rpc, req.agent_id, req.task_id, req.tool, payload(req), e, t0, active.revision,
                               req.principal)
            raise
        decision, record = await decide(req, active, admitted, now, t0)
        appended = await self.journal.append(record)
        return DecideResult(decision=decision, event_id=appended.event_id, appended=appended)

    async def execute(self, req: CallRequest) -> ExecuteResult:
        t0 = time.perf_counter()
        active = self.policy.current
        now = self.clock()
        refused: AeclError | None = None
        if req.approval_id:
            try:
                await self.approvals.refuse_resume(req)  # always raises: nothing runs twice
            except AeclError as e:
                await self._reject(req.rpc, req.agent_id, req.task_id, req.tool, payload(req), e, t0,
                                   active.revision, req.principal)
                raise
        first = None
        async with self.store.transaction() as tx:
            try:
                if req.idempotency_key:
                    check_key(req.idempotency_key)
                admitted = await admit(req, active, self.limits, now, store=self.store, tx=tx)
                # A repeat: answered from the first call, outside this
                # transaction, which rolls back (the repeat counts nothing).
                first = await self.ledger.lookup(tx, req)
            except AeclError as e:
                refused = e  # rolled back on the way out: a refused call counts nothing
            else:
                if first is None:
                    decision, record = await decide(req, active, admitted, now, t0)
                    return await self.dispatch.execute(req, active, admitted, decision, record, tx, t0, now=now)
        if first is not None:
            try:
                return await self.ledger.duplicate(req, first, t0, self.approvals.state_for_duplicate)
            except AeclError as e:
                refused = e
        # Logged outside the transaction: no one waits on its lock for this fsync.
        await self._reject(req.rpc, req.agent_id, req.task_id, req.tool, payload(req), refused, t0, active.revision,
                           req.principal)
        raise refused

    # -- records of the service itself --------------------------------------

    async def log_reload(self, result: ReloadResult) -> None:
        """A policy swap, or a rejected candidate, is part of the record too."""
        await self.journal.append(PolicyReload(
            timestamp=timestamp(self.clock()), principal=result.by or self.service_principal, rpc="ReloadPolicy", input_payload={"trigger": result.trigger},
            policy_applied=self.policy.current.revision, outcome="applied" if result.applied else "rejected",
            reason=result.message, old_revision=result.old_revision, new_revision=result.new_revision,
            changed=result.changed,
        ))

    async def log_service(self, event: str, *, config_digest: str, listen: str) -> None:
        """The service started (listeners bound) or is stopping."""
        active = self.policy.current
        await self.journal.append(ServiceRecord(
            timestamp=timestamp(self.clock()), principal=self.service_principal, policy_applied=active.revision, event=event,  # type: ignore[arg-type]
            outcome="started" if event == "start" else "stopped",  # type: ignore[arg-type]
            reason=f"aecl {__version__} {'serving on ' + listen if event == 'start' else 'stopping'} "
                   f"(engine {active.engine.name}, policy {active.revision})",
            version=__version__, config_digest=config_digest, engine=active.engine.name, listen=listen,
            pid=os.getpid(),
        ))

    async def log_invalid(self, rpc: str, error: AeclError, fields: dict[str, Any], *,
                          payload: dict[str, Any] | None = None, principal: Principal | None = None) -> None:
        """Log a request rejected at the wire boundary (before a CallRequest exists)."""
        await self._reject(rpc, str(fields.get("agent_id", "")), str(fields.get("task_id", "")),
                           str(fields.get("tool", "")), payload or {}, error, time.perf_counter(),
                           self.policy.current.revision, principal)

    async def _reject(self, rpc: str, agent_id: str, task_id: str, action: str, payload: dict[str, Any],
                      error: AeclError, t0: float, revision: str, principal: Principal | None = None) -> None:
        await self.journal.append(rejected_record(rpc, agent_id, task_id, action, payload, error,
                                                  now=self.clock(), policy_revision=revision, t0=t0,
                                                  principal=principal))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
