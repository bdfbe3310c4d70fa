"""EnforcerService over grpc.aio: convert, call the pipeline, convert back."""

from __future__ import annotations

import logging
import time

import grpc

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.config import LimitsConfig
from enforcer.errors import AeclError, InvalidRequest, NotFound
from enforcer.manifests import AgentManifest, ToolRegistry, ToolSpec
from enforcer.pipeline.pipeline import Pipeline
from enforcer.pipeline.request import RenewRequest
from enforcer.pipeline.validate import require_id
from enforcer.policy.holder import ActivePolicy, PolicyHolder
from enforcer.policy.reload import PolicyReloader
from enforcer.server import convert
from enforcer.server.auth import current_principal
from enforcer.server.status import abort

log = logging.getLogger(__name__)


class EnforcerService(pb_grpc.EnforcerServiceServicer):
    def __init__(self, pipeline: Pipeline, limits: LimitsConfig) -> None:
        self.pipeline = pipeline
        self.limits = limits

    async def StartTask(self, request: pb.StartTaskRequest, context: grpc.aio.ServicerContext) -> pb.StartTaskResponse:
        try:
            started = await self.pipeline.start_task(convert.start_task_request(request, current_principal()))
        except AeclError as e:
            await abort(context, e)
        resp = pb.StartTaskResponse(task_id=started.task_id, expires_at=convert.timestamp(started.expires_at),
                                    token=started.token)
        if started.token_expires_at is not None:
            resp.token_expires_at.CopyFrom(convert.timestamp(started.token_expires_at))
        return resp

    async def RenewTaskToken(self, request: pb.RenewTaskTokenRequest,
                             context: grpc.aio.ServicerContext) -> pb.RenewTaskTokenResponse:
        try:
            renewed = await self.pipeline.renew_token(
                RenewRequest(agent_id=request.agent_id, task_id=request.task_id, principal=current_principal()))
        except AeclError as e:
            await abort(context, e)
        return pb.RenewTaskTokenResponse(token=renewed.token,
                                         token_expires_at=convert.timestamp(renewed.token_expires_at))

    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        try:
            req = await self._call_request("Decide", request, context)
            result = await self.pipeline.decide(req)
        except AeclError as e:
            await abort(context, e)
        return convert.decide_response(result)

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> pb.ExecuteResponse:
        try:
            req = await self._call_request("Execute", request, context)
            result = await self.pipeline.execute(req)
        except AeclError as e:
            await abort(context, e)
        return convert.execute_response(result)

    # -- escalated calls: where they stand ----------------------------------

    async def GetExecution(self, request: pb.GetExecutionRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetExecutionResponse:
        try:
            a = await self._approval("GetExecution", request)
        except AeclError as e:
            await abort(context, e)
        return convert.execution_response(a)

    async def WaitForExecution(self, request: pb.WaitForExecutionRequest, context: grpc.aio.ServicerContext):
        """The state now, then each change, until a final state or the
        caller's deadline (which ends the stream: read again to go on)."""
        try:
            await self._approval("WaitForExecution", request)
            async for a in self.pipeline.approvals.follow(request.approval_id):
                yield pb.WaitForExecutionResponse(execution=convert.execution_response(a))
        except AeclError as e:
            await abort(context, e)

    async def _approval(self, rpc: str, request):
        try:
            return await self.pipeline.approvals.execution(request.agent_id, request.task_id, request.approval_id)
        except AeclError as e:
            await self.pipeline.log_invalid(rpc, e, {"agent_id": request.agent_id, "task_id": request.task_id},
                                            payload={"approval_id": request.approval_id[:256]},
                                            principal=current_principal())
            raise

    # -- rollback ------------------------------------------------------------

    async def Rollback(self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext) -> pb.RollbackResponse:
        try:
            step = await self.pipeline.rollbacks.rollback(request.agent_id, request.task_id, request.decision_id,
                                                          current_principal())
        except AeclError as e:
            await abort(context, e)
        return pb.RollbackResponse(step=convert.rollback_step(step))

    async def RollbackTask(self, request: pb.RollbackTaskRequest,
                           context: grpc.aio.ServicerContext) -> pb.RollbackTaskResponse:
        try:
            steps = await self.pipeline.rollbacks.rollback_task(request.agent_id, request.task_id,
                                                                current_principal())
        except AeclError as e:
            await abort(context, e)
        return pb.RollbackTaskResponse(steps=[convert.rollback_step(s) for s in steps])

    # -- discovery: reads of the policy in force --------------------------
    # They decide and change nothing, so an answer is not logged: it is a
    # function of the policy revision, whose every change is logged already
    # (policy_reload). A refusal is logged like every other (`rejected`):
    # probing for agent ids leaves a trace.

    async def ListTools(self, request: pb.ListToolsRequest, context: grpc.aio.ServicerContext) -> pb.ListToolsResponse:
        try:
            active, manifest = await self._agent("ListTools", request.agent_id)
        except AeclError as e:
            await abort(context, e)
        return convert.list_tools_response(visible_tools(manifest, active.registry), active.revision)

    async def GetAgentPermissions(self, request: pb.GetAgentPermissionsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetAgentPermissionsResponse:
        try:
            active, manifest = await self._agent("GetAgentPermissions", request.agent_id)
        except AeclError as e:
            await abort(context, e)
        return convert.agent_permissions_response(manifest, shadow=active.is_shadow(manifest.agent_id),
                                                  revision=active.revision)

    async def _agent(self, rpc: str, agent_id: str) -> tuple[ActivePolicy, AgentManifest]:
        """The policy in force (read once) and the agent's manifest in it."""
        active = self.pipeline.policy.current
        try:
            require_id("agent_id", agent_id)
            manifest = active.agents.get(agent_id)
            if manifest is None:
                raise NotFound(f"agent_id: no manifest for agent '{agent_id}'")
        except AeclError as e:
            await self.pipeline.log_invalid(rpc, e, {"agent_id": agent_id}, principal=current_principal())
            raise
        return active, manifest

    async def undecodable(self, rpc: str, error: AeclError, context: grpc.aio.ServicerContext, size: int) -> None:
        """A request that does not even parse: logged (nothing of it can be
        trusted, so only its size), then refused."""
        await self.pipeline.log_invalid(rpc, error, {}, payload={"request_bytes": size},
                                        principal=current_principal())
        await abort(context, error)

    async def _call_request(self, rpc: str, request, context: grpc.aio.ServicerContext):
        try:
            return convert.call_request(rpc, request, self.limits, deadline=_deadline(context),
                                        principal=current_principal())
        except AeclError as e:
            # Rejected at the wire: still logged, with what identifies the caller.
            await self.pipeline.log_invalid(
                rpc, e, {"agent_id": request.agent_id, "task_id": request.task_id, "tool": request.call.name},
                principal=current_principal(),
            )
            raise


class AdminService(pb_grpc.AdminServiceServicer):
    """Operator RPCs. Same listener as the agents' API: put an authenticating
    interceptor in front before exposing it beyond loopback."""

    def __init__(self, policy: PolicyHolder, reloader: PolicyReloader, pipeline: Pipeline) -> None:
        self.policy = policy
        self.reloader = reloader
        self.pipeline = pipeline

    async def RevokeTask(self, request: pb.RevokeTaskRequest,
                         context: grpc.aio.ServicerContext) -> pb.RevokeTaskResponse:
        try:
            require_id("task_id", request.task_id)
            r = await self.pipeline.revoke("task", request.task_id, _reason(request.reason), current_principal())
        except AeclError as e:
            await abort(context, e)
        return pb.RevokeTaskResponse(event_id=r.event_id, approvals_cancelled=r.approvals_cancelled)

    async def RevokeAgent(self, request: pb.RevokeAgentRequest,
                          context: grpc.aio.ServicerContext) -> pb.RevokeAgentResponse:
        try:
            require_id("agent_id", request.agent_id)
            r = await self.pipeline.revoke("agent", request.agent_id, _reason(request.reason), current_principal())
        except AeclError as e:
            await abort(context, e)
        return pb.RevokeAgentResponse(event_id=r.event_id, tasks_revoked=len(r.tasks_revoked),
                                      approvals_cancelled=r.approvals_cancelled)

    async def ReloadPolicy(self, request: pb.ReloadPolicyRequest,
                           context: grpc.aio.ServicerContext) -> pb.ReloadPolicyResponse:
        return convert.reload_response(await self.reloader.reload("admin RPC", current_principal()))

    async def GetPolicyStatus(self, request: pb.GetPolicyStatusRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetPolicyStatusResponse:
        active = self.policy.current
        resp = pb.GetPolicyStatusResponse(
            policy_revision=active.revision, engine=active.engine.name,
            shadow_all=active.shadow_all, shadow_agents=sorted(active.shadow_agents),
        )
        last = self.reloader.last
        if last is not None:
            resp.last_reload.CopyFrom(convert.reload_response(last))
            resp.last_reload_at.CopyFrom(convert.timestamp(last.at))
        return resp


def visible_tools(manifest: AgentManifest, registry: ToolRegistry) -> list[tuple[str, ToolSpec, str | None]]:
    """(name, spec, context rule) of each registered tool the manifest allows
    or governs by a context rule and does not block, sorted by name. A name
    on the manifest that is not in the registry cannot be called: left out."""
    blocked = set(manifest.blocked_actions)
    names = (set(manifest.allowed_actions) | set(manifest.context_rules)) - blocked
    return [(name, registry.tools[name], manifest.context_rules.get(name))
            for name in sorted(names) if name in registry.tools]


MAX_REASON_BYTES = 1024


def _reason(text: str) -> str:
    if len(text.encode()) > MAX_REASON_BYTES:
        raise InvalidRequest("reason", f"longer than {MAX_REASON_BYTES} bytes")
    return text


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the monotonic clock, if it set one."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None
