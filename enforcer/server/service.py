"""EnforcerService over grpc.aio: convert, call the pipeline, convert back."""

from __future__ import annotations

import logging
import time

import grpc

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.config import LimitsConfig
from enforcer.errors import AeclError
from enforcer.pipeline.pipeline import Pipeline
from enforcer.policy.holder import PolicyHolder
from enforcer.policy.reload import PolicyReloader
from enforcer.server import convert
from enforcer.server.status import abort

log = logging.getLogger(__name__)


class EnforcerService(pb_grpc.EnforcerServiceServicer):
    def __init__(self, pipeline: Pipeline, limits: LimitsConfig) -> None:
        self.pipeline = pipeline
        self.limits = limits

    async def StartTask(self, request: pb.StartTaskRequest, context: grpc.aio.ServicerContext) -> pb.StartTaskResponse:
        try:
            started = await self.pipeline.start_task(convert.start_task_request(request))
        except AeclError as e:
            await abort(context, e)
        return pb.StartTaskResponse(task_id=started.task_id, expires_at=convert.timestamp(started.expires_at))

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

    async def undecodable(self, rpc: str, error: AeclError, context: grpc.aio.ServicerContext, size: int) -> None:
        """A request that does not even parse: logged (nothing of it can be
        trusted, so only its size), then refused."""
        await self.pipeline.log_invalid(rpc, error, {}, payload={"request_bytes": size})
        await abort(context, error)

    async def _call_request(self, rpc: str, request, context: grpc.aio.ServicerContext):
        try:
            return convert.call_request(rpc, request, self.limits, deadline=_deadline(context))
        except AeclError as e:
            # Rejected at the wire: still logged, with what identifies the caller.
            await self.pipeline.log_invalid(
                rpc, e, {"agent_id": request.agent_id, "task_id": request.task_id, "tool": request.call.name}
            )
            raise


class AdminService(pb_grpc.AdminServiceServicer):
    """Operator RPCs. Same listener as the agents' API: put an authenticating
    interceptor in front before exposing it beyond loopback."""

    def __init__(self, policy: PolicyHolder, reloader: PolicyReloader) -> None:
        self.policy = policy
        self.reloader = reloader

    async def ReloadPolicy(self, request: pb.ReloadPolicyRequest,
                           context: grpc.aio.ServicerContext) -> pb.ReloadPolicyResponse:
        return convert.reload_response(await self.reloader.reload("admin RPC"))

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


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the monotonic clock, if it set one."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None
