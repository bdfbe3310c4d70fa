"""Stage 4, run-approved: run a call that something authorised, and log how
it ended. Entered from Execute (an approved decision) today, and on its own
by the next front ends (an approved escalation, a compensation, MCP).

Invariants:
- the tool never starts before what authorises it is durable: `authorised`
  (the decision's append and the store commit) runs while bubblewrap builds
  the sandbox, and the tool is released only once it has succeeded; if it
  fails, the sandbox is killed unreleased;
- every way out after the authorisation is durable ends in exactly one
  execution entry: success, tool failure, a sandbox that could not start or
  was busy, the store failing, cancellation (client, deadline, shutdown), a
  crash of the output parser or any other exception;
- the tool's timeout is cut short by the end of its task loop;
- a tool with connectors reaches them only through a per-execution endpoint
  (enforcer.connectors): opened before the sandbox starts, closed when it
  ends, and every request through it is a `connector_request` entry linked
  to this execution, durable before the tool sees the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from enforcer.audit.canonical import canonical_json
from enforcer.audit.records import ConnectorRequestRecord, ExecutionRecord, timestamp
from enforcer.connectors.proxy import Connector, ConnectorGateway, ProxiedRequest
from enforcer.config import SandboxConfig
from enforcer.errors import AeclError, AuditUnavailable, ResourceExhausted, SandboxError, StoreError
from enforcer.manifests import ToolSpec
from enforcer.pipeline.journal import Journal
from enforcer.pipeline.ledger import CallLedger, derived_key, rollback_token
from enforcer.pipeline.request import CallRequest, ExecuteResult
from enforcer.pipeline.tool_output import interpret_result
from enforcer.policy.decision import Decision
from enforcer.sandbox.backend import SandboxBackend
from enforcer.sandbox.runner import SandboxResult, new_sandbox_id
from enforcer.state.store import StoreTx, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Execution:
    """What a connector request belongs to (the gateway's context)."""

    req: CallRequest
    decision: Decision
    sandbox_id: str


class RunApproved:
    def __init__(self, journal: Journal, sandbox: SandboxBackend, sandbox_config: SandboxConfig,
                 clock: Callable[[], float], shutting_down: Callable[[], bool],
                 connectors: Mapping[str, Connector] | None = None) -> None:
        self.journal = journal
        self.sandbox = sandbox
        self.sandbox_config = sandbox_config
        self.clock = clock
        self.shutting_down = shutting_down
        # The one gateway of the service: its requests are logged through this stage.
        self.gateway = ConnectorGateway(connectors, self.log_connector_request) if connectors else None
        # The upstream MCP servers (enforcer.mcp.upstream.Upstreams), when the service runs any.
        self.mcp: Any = None

    def _endpoint(self, tool: ToolSpec, execution: _Execution):
        """The tool's connector endpoint for this execution, or nothing."""
        if not tool.connectors:
            return contextlib.nullcontext(None)
        gateway = self.gateway
        if gateway is None:
            raise SandboxError(f"tool {execution.req.tool} uses connectors {list(tool.connectors)}, but this "
                               "service has none configured")
        req = execution.req
        key = [("Idempotency-Key", derived_key(req.agent_id, req.task_id, req.idempotency_key))] \
            if req.idempotency_key else []
        return gateway.endpoint(permitted=tuple(tool.connectors), context=execution, headers=key)

    async def log_connector_request(self, r: ProxiedRequest, execution: _Execution) -> None:
        """The gateway's on_request: one entry per request, before the tool sees the answer."""
        req, d = execution.req, execution.decision
        await self.journal.append(ConnectorRequestRecord(
            timestamp=timestamp(self.clock()), agent_id=req.agent_id, task_id=req.task_id, principal=req.principal,
            rpc=req.rpc, action_name=req.tool, policy_applied=d.policy_revision, decision_id=d.decision_id,
            sandbox_id=execution.sandbox_id, hitl_approval_id=req.approval_id or None, outcome="refused" if r.refused else "forwarded",
            reason=r.refused or f"{r.method} {r.path} -> {r.status}", latency_ms=r.duration_ms,
            connector=r.connector[:256], method=r.method[:16], path=r.path[:2048], status=r.status,
            upstream_status=r.upstream_status, bytes_in=r.bytes_in, bytes_out=r.bytes_out,
            duration_ms=r.duration_ms, refused=r.refused,
        ))

    async def run(self, req: CallRequest, tool: ToolSpec, task: Task, decision: Decision, *,
                  authorised: Awaitable[Any], tools_dir: Any, t0: float) -> ExecuteResult:
        if tool.mcp is not None:
            return await self._forward_mcp(req, tool, task, decision, authorised, t0)
        # A task of its own, so the authorisation completes (or fails) even
        # when the sandbox is refused before it awaits it.
        gate = asyncio.ensure_future(authorised)
        # Shielded: a caller cancelled while the decision is being appended
        # must not cut the authorisation in half (durable decision, rolled
        # back state). It completes; the cancellation is logged after it.
        release = asyncio.shield(gate)
        started = time.monotonic()
        sandbox_id = new_sandbox_id()
        timeout = max(0.001, min(tool.timeout_s or self.sandbox_config.call_timeout_s,
                                 task.expires_at - self.clock()))
        try:
            async with self._endpoint(tool, _Execution(req, decision, sandbox_id)) as connector_socket:
                result = await self.sandbox.run(
                    tool.command, json.dumps(req.args, allow_nan=False).encode(), timeout, tools_dir,
                    sandbox=tool.sandbox, release=release, sandbox_id=sandbox_id,
                    **({"connector_socket": connector_socket} if connector_socket is not None else {}),
                )
        except asyncio.CancelledError:
            if await self._after_gate(gate):
                cause = self._cancel_cause(req)
                await self._log(req, decision, t0, started, None, _interrupted(tool), cause,
                                f"interrupted ({cause.replace('_', ' ')}): the call was cancelled before its "
                                "tool finished, and its sandbox was killed", sandbox_id=sandbox_id)
            raise
        except BaseException as e:  # noqa: BLE001 - every way out is logged
            if not await self._after_gate(gate):
                # The authorisation never became durable: nothing ran, nothing
                # to explain, and the transaction was rolled back.
                raise (gate.exception() if gate.done() and not gate.cancelled() and gate.exception() else e)
            cause, error = _failure(e)
            appended = await self._log(req, decision, t0, started, None, "failed", cause, error)
            if isinstance(e, SandboxError):
                # The tool never started: an outcome of the call, not an RPC error.
                return ExecuteResult(decision, "failed", appended.event_id, error=error, appended=appended)
            if isinstance(e, AeclError) or not isinstance(e, Exception):
                raise
            raise AeclError(f"internal error while running {req.tool}: {type(e).__name__}") from e
        if not await self._after_gate(gate):
            # The sandbox ended before its release was decided and the
            # authorisation then failed: nothing ran, nothing to explain.
            raise gate.exception() if not gate.cancelled() and gate.exception() else AuditUnavailable(
                "the call's authorisation did not become durable")
        try:
            status, output, error = interpret_result(result)
        except BaseException as e:  # noqa: BLE001 - a parser crash is still an execution
            status, output, error = "failed", None, f"the tool's output could not be read: {type(e).__name__}"
        if result.timed_out and status == "failed":
            status = _interrupted(tool)
        token = rollback_token(output)
        appended = await self._log(req, decision, t0, started, result, status, "", error, token=token)
        return ExecuteResult(
            decision, status, appended.event_id, output=output, error=error,  # type: ignore[arg-type]
            sandbox_id=result.sandbox_id, output_truncated=result.output_truncated, appended=appended,
            rollback_token=token,
        )

    async def _forward_mcp(self, req: CallRequest, tool: ToolSpec, task: Task, decision: Decision,
                           authorised: Awaitable[Any], t0: float) -> ExecuteResult:
        """An MCP tool: forwarded to its upstream server (itself sandboxed,
        enforcer.mcp.upstream) once the authorisation is durable; one
        execution entry, with a digest of what came back."""
        assert tool.mcp is not None
        started = time.monotonic()
        await asyncio.shield(asyncio.ensure_future(authorised))  # raises: nothing forwarded, nothing to explain
        upstreams = self.mcp
        ref = tool.mcp
        sandbox_id = upstreams.sandbox_id(ref.upstream) if upstreams is not None else ""
        # The tool's own timeout, else its upstream's call_timeout_s; never past the task's end.
        left = task.expires_at - self.clock()
        default = upstreams.call_timeout(ref.upstream) if upstreams is not None else self.sandbox_config.call_timeout_s
        timeout = max(0.001, min(tool.timeout_s or default, left))
        try:
            if upstreams is None:
                raise SandboxError(f"tool {req.tool} is an MCP tool of upstream {ref.upstream!r}, but this service "
                                   "runs no MCP upstreams (mcp.upstreams)")
            result = await upstreams.call(ref.upstream, ref.tool, req.args, timeout_s=timeout)
        except asyncio.CancelledError:
            cause = self._cancel_cause(req)
            await self._log(req, decision, t0, started, None, _interrupted(tool), cause,
                            f"interrupted ({cause.replace('_', ' ')}) while the upstream MCP server ran the call",
                            sandbox_id=sandbox_id)
            raise
        except SandboxError as e:  # the upstream died, timed out or is not running
            status = _interrupted(tool) if getattr(e, "code", "") == "mcp_upstream_unavailable" else "failed"
            appended = await self._log(req, decision, t0, started, None, status, "upstream_unavailable", str(e),
                                       sandbox_id=sandbox_id)
            return ExecuteResult(decision, status, appended.event_id, error=str(e), sandbox_id=sandbox_id,
                                 appended=appended)
        output = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        digest = "sha256:" + hashlib.sha256(canonical_json(output)).hexdigest()
        status = "failed" if result.is_error else "succeeded"
        error = "the upstream MCP server answered isError" if result.is_error else ""
        appended = await self._log(req, decision, t0, started, None, status, "", error, sandbox_id=sandbox_id,
                                   output_sha256=digest)
        return ExecuteResult(decision, status, appended.event_id, output=output, error=error,  # type: ignore[arg-type]
                             sandbox_id=sandbox_id, appended=appended)

    async def _after_gate(self, gate: asyncio.Future) -> bool:
        """Let the authorisation finish; True when it became durable (the
        decision is in the log), so an execution entry must follow."""
        try:
            await asyncio.shield(gate)
        except asyncio.CancelledError:
            if not gate.done():
                return False
        except BaseException:  # noqa: BLE001
            pass
        if gate.cancelled():
            return False
        error = gate.exception()
        return error is None or isinstance(error, StoreError)

    def _cancel_cause(self, req: CallRequest) -> str:
        if self.shutting_down():
            return "shutdown"
        if req.deadline is not None and time.monotonic() >= req.deadline - 0.001:
            return "deadline"
        return "client_cancelled"

    async def _log(self, req: CallRequest, decision: Decision, t0: float, started: float,
                   result: SandboxResult | None, status: str, cause: str, error: str, *,
                   sandbox_id: str | None = None, token: str | None = None, output_sha256: str | None = None):
        r = result
        record = ExecutionRecord(
            timestamp=timestamp(self.clock()), agent_id=req.agent_id, task_id=req.task_id, principal=req.principal,
            rpc=req.rpc, action_name=req.tool,
            input_payload={"args": req.args, **({"mcp_request_id": req.mcp_request_id} if req.mcp_request_id else {})},
            policy_applied=decision.policy_revision,
            risk_score=decision.risk_score, outcome=status, reason=error or "tool succeeded",
            latency_ms=round((time.perf_counter() - t0) * 1000, 3), decision_id=decision.decision_id,
            sandbox_id=(r.sandbox_id or None) if r else sandbox_id,
            exit_code=r.exit_code if r else None, signal=r.signal if r else None,
            timed_out=r.timed_out if r else False, output_truncated=r.output_truncated if r else False,
            duration_ms=round((r.duration_s if r else time.monotonic() - started) * 1000, 3),
            resource_usage={
                "cpu_time_ms": round(r.cpu_time_s * 1000, 3) if r and r.cpu_time_s is not None else None,
                "peak_memory_bytes": r.peak_memory_bytes if r else None,
            },
            limits_hit=tuple(r.limits_hit) if r else (),
            cause=cause, hitl_approval_id=req.approval_id or None, rollback_token=token, output_sha256=output_sha256,
        )
        try:
            return await self.journal.append(record)
        except AuditUnavailable as e:
            log.critical("execution of decision %s could not be logged: %s", decision.decision_id, e)
            raise


async def run_recorded(run_approved: RunApproved, ledger: CallLedger, tx: StoreTx, req: CallRequest,
                       tool: ToolSpec, task: Task, decision: Decision, authorised: Awaitable[None], tools_dir: Any,
                       t0: float) -> ExecuteResult:
    """Run an authorised call, then save what the ledger keeps of it (its
    first result, its outcome and rollback_token), whatever way it ended.
    When the authorisation never committed, its transaction (still open
    here, rolled back by the caller) takes the ledger's rows with it."""
    try:
        result = await run_approved.run(req, tool, task, decision, authorised=authorised, tools_dir=tools_dir, t0=t0)
    except BaseException as e:
        if tx.done:  # type: ignore[attr-defined]
            await asyncio.shield(ledger.after_crash(req, tool, decision, e))
        else:
            ledger.forget(req)
        raise
    await asyncio.shield(ledger.after_run(req, tool, result))
    return result


def _interrupted(tool: ToolSpec) -> str:
    """How a run cut short ends: a write may have taken effect (unknown); a read changed nothing."""
    return "unknown" if tool.access == "write" else "failed"


def _failure(e: BaseException) -> tuple[str, str]:
    if isinstance(e, ResourceExhausted):
        return e.code, f"not run: {e}"
    if isinstance(e, StoreError):
        return "store_failed", f"not run: the state store failed before the tool started: {e}"
    if isinstance(e, SandboxError):
        return "sandbox_unavailable", f"the sandbox could not start: {e}"
    return "internal_error", f"internal error while running the tool: {type(e).__name__}: {e}"

