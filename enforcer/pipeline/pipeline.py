"""The enforcement pipeline. StartTask, Decide and Execute (and later
approvals and rollbacks) all pass through here; the gRPC layer only converts
messages.

Invariants:
- every call that reaches the pipeline leaves an audit entry, including
  rejected input and engine failures;
- a decision is durable (fsynced) before anything executes;
- any error on the way to a decision is a BLOCK, never an APPROVE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from enforcer.audit.log import AuditLog
from enforcer.config import LimitsConfig, SandboxConfig
from enforcer.errors import AeclError, NotFound, PermissionDenied, PolicyError, SandboxError
from enforcer.manifests import ToolSpec
from enforcer.metrics import Metrics
from enforcer.pipeline import records
from enforcer.pipeline.policy_input import build_policy_input
from enforcer.pipeline.request import (
    CallRequest,
    DecideResult,
    ExecuteResult,
    StartTaskRequest,
    TaskStarted,
)
from enforcer.pipeline.validate import validate_call, validate_start_task
from enforcer.policy.decision import Decision, blocked_by_error, parse_decision
from enforcer.policy.reload import ActivePolicy, ReloadResult
from enforcer.sandbox.runner import BwrapRunner, SandboxResult
from enforcer.state.store import Approval, StateStore, Task

log = logging.getLogger(__name__)
_STDERR_TAIL = 512


class Pipeline:
    def __init__(
        self,
        *,
        active: ActivePolicy,
        audit: AuditLog,
        store: StateStore,
        sandbox: BwrapRunner,
        sandbox_config: SandboxConfig,
        limits: LimitsConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Replaced whole by hot reload; each call reads it exactly once.
        self.active = active
        self.audit = audit
        self.store = store
        self.sandbox = sandbox
        self.sandbox_config = sandbox_config
        self.limits = limits
        self.metrics = metrics
        self.clock = clock

    # -- StartTask -------------------------------------------------------

    async def start_task(self, req: StartTaskRequest) -> TaskStarted:
        t0 = time.perf_counter()
        now = self.clock()
        try:
            validate_start_task(req)
        except AeclError as e:
            await self._log_rejection("StartTask", req.agent_id, "", "", {}, e, t0)
            raise
        task = Task(
            task_id=records.new_id("tsk"),
            agent_id=req.agent_id,
            declared_goal=req.declared_goal,
            declared_actions=req.declared_actions,
            started_at=now,
            expires_at=now + self.sandbox_config.task_timeout_s,
            calls_so_far=0,
        )
        self.store.create_task(task)
        record = records.base_record(
            "task_started", "StartTask", now=now, agent_id=req.agent_id, task_id=task.task_id,
            action_name="", input_payload={"declared_goal": req.declared_goal,
                                           "declared_actions": list(req.declared_actions)},
            policy_revision=self.active.revision, latency_ms=_ms(t0),
        )
        record.update(outcome="started", reason=f"task expires at {records._timestamp(task.expires_at)}")
        entry = await self._append(record)
        return TaskStarted(task_id=task.task_id, expires_at=task.expires_at, event_id=entry["event_id"])

    # -- Decide / Execute ------------------------------------------------

    async def decide(self, req: CallRequest) -> DecideResult:
        t0 = time.perf_counter()
        active = self.active
        tool, task = await self._admit(req, active, t0, claim=False)
        decision, record = await self._decide(req, active, tool, task, t0)
        entry = await self._append(record)
        return DecideResult(decision=decision, event_id=entry["event_id"])

    async def execute(self, req: CallRequest) -> ExecuteResult:
        t0 = time.perf_counter()
        active = self.active
        tool, task = await self._admit(req, active, t0, claim=True)
        decision, record = await self._decide(req, active, tool, task, t0)
        record["idempotency_key"] = req.idempotency_key or None

        if decision.shadow and decision.outcome != "approve":
            # Shadow mode: the verdict is on record, the call proceeds as if
            # approved. Loud on purpose: this is a policy not being enforced.
            log.warning("SHADOW: %s %s for agent %s would be %s (%s: %s); running it anyway",
                        req.rpc, req.tool, req.agent_id, decision.outcome.upper(), decision.rule, decision.reason)
            record["enforced"] = False
        elif decision.outcome == "block":
            entry = await self._append(record)
            return ExecuteResult(decision, "blocked", entry["event_id"], error=decision.reason)

        elif decision.outcome == "escalate":
            approval = Approval(
                approval_id=records.new_id("apr"),
                task_id=req.task_id,
                decision_id=decision.decision_id,
                action_name=req.tool,
                created_at=self.clock(),
                expires_at=self.clock() + decision.approval_ttl_seconds,
                status="pending",
            )
            self.store.create_approval(approval)
            record["hitl_approval_id"] = approval.approval_id
            entry = await self._append(record)
            return ExecuteResult(
                decision, "pending_approval", entry["event_id"], approval_id=approval.approval_id
            )

        # Approved: the decision is on disk before the tool starts.
        await self._append(record)
        try:
            result = await self.sandbox.run(
                tool.command,
                json.dumps(req.args, allow_nan=False).encode(),
                # The call's timeout, cut short by the end of its task loop.
                max(0.001, min(tool.timeout_s or self.sandbox_config.call_timeout_s,
                               task.expires_at - self.clock())),
                active.registry.tools_dir,
                sandbox=tool.sandbox,
            )
        except SandboxError as e:
            # The approval is on record; so must be the fact that nothing ran.
            result = _NOTHING_RAN
            status, output, error = "failed", None, f"the sandbox could not start: {e}"
        except asyncio.CancelledError:
            # Shutdown (or a cancelled RPC): the runner killed the sandbox. The
            # call's story must still end in the log, as a failure.
            record = self._execution_record(req, decision, t0, _NOTHING_RAN, "failed",
                                            "interrupted: the call was cancelled (service shutdown) and its "
                                            "sandbox was killed")
            try:
                await asyncio.shield(self._append(record))
            except AeclError as e:
                log.critical("interrupted call %s could not be logged: %s", decision.decision_id, e)
            raise
        else:
            status, output, error = interpret_result(result)
        exec_record = self._execution_record(req, decision, t0, result, status, error)
        entry = await self._append(exec_record)
        return ExecuteResult(
            decision, status, entry["event_id"], output=output, error=error,
            sandbox_id=result.sandbox_id, output_truncated=result.output_truncated,
        )

    def _execution_record(self, req: CallRequest, decision: Decision, t0: float, result: SandboxResult,
                          status: str, error: str) -> dict[str, Any]:
        exec_record = records.base_record(
            "execution", "Execute", now=self.clock(), agent_id=req.agent_id, task_id=req.task_id,
            action_name=req.tool, input_payload={"args": req.args}, policy_revision=decision.policy_revision,
            latency_ms=_ms(t0),
        )
        exec_record.update(
            outcome=status,
            reason=error or "tool succeeded",
            decision_id=decision.decision_id,
            risk_score=decision.risk_score,
            sandbox_id=result.sandbox_id or None,
            exit_code=result.exit_code,
            signal=result.signal,
            timed_out=result.timed_out,
            output_truncated=result.output_truncated,
            duration_ms=round(result.duration_s * 1000, 3),
            resource_usage={
                "cpu_time_ms": round(result.cpu_time_s * 1000, 3) if result.cpu_time_s is not None else None,
                "peak_memory_bytes": result.peak_memory_bytes,
            },
            limits_hit=list(result.limits_hit),
        )
        return exec_record

    # -- stages ------------------------------------------------------------

    async def _admit(self, req: CallRequest, active: ActivePolicy, t0: float, *,
                     claim: bool) -> tuple[ToolSpec, Task]:
        """Validate the request and resolve its task; log and re-raise on failure."""
        try:
            tool = validate_call(req, active.registry, self.limits)
            task = self.store.claim_call(req.task_id) if claim else self.store.get_task(req.task_id)
            if task is None:
                raise NotFound(f"task '{req.task_id}' does not exist")
            if task.agent_id != req.agent_id:
                raise PermissionDenied(f"task '{req.task_id}' belongs to another agent")
            return tool, task
        except AeclError as e:
            await self._log_rejection(req.rpc, req.agent_id, req.task_id, req.tool,
                                      _payload(req), e, t0)
            raise

    async def _decide(self, req: CallRequest, active: ActivePolicy, tool: ToolSpec, task: Task,
                      t0: float) -> tuple[Decision, dict]:
        engine = active.engine
        now = self.clock()
        decision_id = records.new_id("dec")
        policy_input = build_policy_input(req, tool, task, now)
        try:
            if engine.blocking:
                raw = await asyncio.get_running_loop().run_in_executor(None, engine.evaluate, policy_input)
            else:
                raw = engine.evaluate(policy_input)
            decision = parse_decision(raw, revision=engine.revision, decision_id=decision_id)
            if active.is_shadow(req.agent_id):
                decision = replace(decision, shadow=True)
        except PolicyError as e:
            # Fail closed even in shadow mode: no policy answer, no action.
            log.error("decision %s blocked: %s", decision_id, e)
            decision = blocked_by_error(e, revision=engine.revision, decision_id=decision_id)
        record = records.base_record(
            "decision", req.rpc, now=now, agent_id=req.agent_id, task_id=req.task_id,
            action_name=req.tool, input_payload=_payload(req), policy_revision=decision.policy_revision,
            latency_ms=_ms(t0),
        )
        # The complete input, so `aecl policy replay` can re-decide this call
        # under a candidate policy exactly as it was decided here.
        record["policy_input"] = policy_input
        return decision, records.with_decision(record, decision)

    async def _log_rejection(
        self, rpc: str, agent_id: str, task_id: str, action: str,
        payload: dict[str, Any], error: AeclError, t0: float,
    ) -> None:
        record = records.base_record(
            "rejected", rpc, now=self.clock(), agent_id=agent_id[:256], task_id=task_id[:256],
            action_name=action[:256], input_payload=payload, policy_revision=self.active.revision,
            latency_ms=_ms(t0),
        )
        record.update(outcome="rejected", reason=str(error), error_class=type(error).__name__)
        await self._append(record)

    async def _append(self, record: dict[str, Any]) -> dict[str, Any]:
        await asyncio.wrap_future(self.audit.submit(record))
        if self.metrics is not None:
            self.metrics.observe(record)  # counted once durable, like the log
        return record

    async def log_reload(self, result: ReloadResult) -> None:
        """A policy swap, or a rejected candidate, is part of the record too."""
        record = records.base_record(
            "policy_reload", "ReloadPolicy", now=self.clock(), agent_id="", task_id="", action_name="",
            input_payload={"trigger": result.trigger}, policy_revision=self.active.revision, latency_ms=0.0,
        )
        record.update(outcome="applied" if result.applied else "rejected", reason=result.message, old_revision=result.old_revision, new_revision=result.new_revision)
        await self._append(record)

    async def log_invalid(self, rpc: str, error: AeclError, fields: dict[str, Any]) -> None:
        """Log a request rejected at the wire boundary (before a CallRequest exists)."""
        await self._log_rejection(
            rpc, str(fields.get("agent_id", "")), str(fields.get("task_id", "")),
            str(fields.get("tool", "")), {}, error, time.perf_counter(),
        )


_NOTHING_RAN = SandboxResult(sandbox_id="", exit_code=None, signal=None, stdout=b"", stderr=b"",
                             timed_out=False, output_truncated=False, duration_s=0.0)


def interpret_result(result: SandboxResult) -> tuple[str, dict[str, Any] | None, str]:
    """Map a sandbox run to (status, output, error). Only a clean exit with a
    JSON object on stdout is success; anything else is a clear failure."""
    if "shutdown" in result.limits_hit:
        return "failed", None, "interrupted: the service shut down and killed the sandbox"
    if result.timed_out:
        return "failed", None, "timeout: the tool ran past its time limit and was killed with its children"
    if result.output_truncated:
        return "failed", None, "the tool's output exceeded the output cap and was cut"
    if result.exit_code != 0:
        how = f"exit status {result.exit_code}" if result.exit_code is not None else f"signal {result.signal}"
        tail = result.stderr[-_STDERR_TAIL:].decode(errors="replace").strip()
        return "failed", None, f"the tool failed with {how}" + (f": {tail}" if tail else "")
    try:
        output = json.loads(result.stdout, parse_constant=_reject_constant)
    except ValueError as e:
        return "failed", None, f"the tool's output is not JSON: {e}"
    if not isinstance(output, dict):
        return "failed", None, f"the tool's output is a JSON {type(output).__name__}, expected an object"
    return "succeeded", output, ""


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def _payload(req: CallRequest) -> dict[str, Any]:
    return {
        "args": req.args,
        "context": {
            "untrusted_input_source": req.untrusted_input_source,
            "triggering_input": req.triggering_input,
        },
        "idempotency_key": req.idempotency_key or None,
    }


def _ms(t0: float) -> float:
    v = (time.perf_counter() - t0) * 1000
    return v if math.isfinite(v) else 0.0
