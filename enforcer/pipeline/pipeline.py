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

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from enforcer.audit.log import AuditLog
from enforcer import __version__
from enforcer.audit.records import PolicyReload, ServiceRecord, new_id, timestamp
from enforcer.audit.records import TaskStarted as TaskStartedRecord
from enforcer.config import LimitsConfig, SandboxConfig
from enforcer.errors import AeclError
from enforcer.metrics import Metrics
from enforcer.pipeline.admit import admit
from enforcer.pipeline.decide import decide
from enforcer.pipeline.dispatch import Dispatch
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.payload import payload
from enforcer.pipeline.rejection import rejected_record
from enforcer.pipeline.request import CallRequest, DecideResult, ExecuteResult, StartTaskRequest, TaskStarted
from enforcer.pipeline.run_approved import RunApproved
from enforcer.pipeline.validate import validate_start_task
from enforcer.policy.holder import PolicyHolder
from enforcer.policy.reload import ReloadResult
from enforcer.sandbox.backend import SandboxBackend
from enforcer.state.store import StateStore, Task

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
    ) -> None:
        self.policy = policy
        self.store = store
        self.sandbox_config = sandbox_config
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.shutting_down = False
        self.journal = Journal(audit, metrics)
        self.run_approved = RunApproved(self.journal, sandbox, sandbox_config, lambda: self.clock(),
                                        lambda: self.shutting_down)
        self.dispatch = Dispatch(self.journal, self.run_approved, lambda: self.clock())

    # -- StartTask -------------------------------------------------------

    async def start_task(self, req: StartTaskRequest) -> TaskStarted:
        t0 = time.perf_counter()
        now = self.clock()
        revision = self.policy.current.revision
        try:
            validate_start_task(req)
        except AeclError as e:
            await self._reject("StartTask", req.agent_id, "", "", {}, e, t0, revision)
            raise
        task = Task(
            task_id=new_id("tsk"), agent_id=req.agent_id, declared_goal=req.declared_goal,
            declared_actions=req.declared_actions, started_at=now,
            expires_at=now + self.sandbox_config.task_timeout_s, calls_so_far=0,
        )
        record = TaskStartedRecord(
            timestamp=timestamp(now), agent_id=req.agent_id, task_id=task.task_id, rpc="StartTask",
            input_payload={"declared_goal": req.declared_goal, "declared_actions": list(req.declared_actions)},
            policy_applied=revision, outcome="started",
            reason=f"task expires at {timestamp(task.expires_at)}", latency_ms=_ms(t0),
        )
        async with self.store.transaction() as tx:
            await tx.create_task(task)
            appended = await self.journal.append(record)
            try:
                await tx.commit()
            except AeclError as e:
                await self._reject("StartTask", req.agent_id, task.task_id, "", {}, e, t0, revision)
                raise
        return TaskStarted(task_id=task.task_id, expires_at=task.expires_at, event_id=appended.event_id,
                           appended=appended)

    # -- Decide / Execute ------------------------------------------------

    async def decide(self, req: CallRequest) -> DecideResult:
        """A dry run: the decision is logged; nothing is counted or run."""
        t0 = time.perf_counter()
        active = self.policy.current
        now = self.clock()
        try:
            admitted = await admit(req, active, self.limits, now, store=self.store, tx=None)
        except AeclError as e:
            await self._reject(req.rpc, req.agent_id, req.task_id, req.tool, payload(req), e, t0, active.revision)
            raise
        decision, record = await decide(req, active, admitted, now, t0)
        appended = await self.journal.append(record)
        return DecideResult(decision=decision, event_id=appended.event_id, appended=appended)

    async def execute(self, req: CallRequest) -> ExecuteResult:
        t0 = time.perf_counter()
        active = self.policy.current
        now = self.clock()
        refused: AeclError | None = None
        async with self.store.transaction() as tx:
            try:
                admitted = await admit(req, active, self.limits, now, store=self.store, tx=tx)
            except AeclError as e:
                refused = e  # rolled back on the way out: a refused call counts nothing
            else:
                decision, record = await decide(req, active, admitted, now, t0)
                return await self.dispatch.execute(req, active, admitted, decision, record, tx, t0)
        # Logged outside the transaction: no one waits on its lock for this fsync.
        await self._reject(req.rpc, req.agent_id, req.task_id, req.tool, payload(req), refused, t0, active.revision)
        raise refused

    # -- records of the service itself --------------------------------------

    async def log_reload(self, result: ReloadResult) -> None:
        """A policy swap, or a rejected candidate, is part of the record too."""
        await self.journal.append(PolicyReload(
            timestamp=timestamp(self.clock()), rpc="ReloadPolicy", input_payload={"trigger": result.trigger},
            policy_applied=self.policy.current.revision, outcome="applied" if result.applied else "rejected",
            reason=result.message, old_revision=result.old_revision, new_revision=result.new_revision,
            changed=result.changed,
        ))

    async def log_service(self, event: str, *, config_digest: str, listen: str) -> None:
        """The service started (listeners bound) or is stopping."""
        active = self.policy.current
        await self.journal.append(ServiceRecord(
            timestamp=timestamp(self.clock()), policy_applied=active.revision, event=event,  # type: ignore[arg-type]
            outcome="started" if event == "start" else "stopped",  # type: ignore[arg-type]
            reason=f"aecl {__version__} {'serving on ' + listen if event == 'start' else 'stopping'} "
                   f"(engine {active.engine.name}, policy {active.revision})",
            version=__version__, config_digest=config_digest, engine=active.engine.name, listen=listen,
            pid=os.getpid(),
        ))

    async def log_invalid(self, rpc: str, error: AeclError, fields: dict[str, Any], *,
                          payload: dict[str, Any] | None = None) -> None:
        """Log a request rejected at the wire boundary (before a CallRequest exists)."""
        await self._reject(rpc, str(fields.get("agent_id", "")), str(fields.get("task_id", "")),
                           str(fields.get("tool", "")), payload or {}, error, time.perf_counter(),
                           self.policy.current.revision)

    async def _reject(self, rpc: str, agent_id: str, task_id: str, action: str, payload: dict[str, Any],
                      error: AeclError, t0: float, revision: str) -> None:
        await self.journal.append(rejected_record(rpc, agent_id, task_id, action, payload, error,
                                                  now=self.clock(), policy_revision=revision, t0=t0))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
