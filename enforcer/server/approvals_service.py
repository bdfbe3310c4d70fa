"""ApprovalService over grpc.aio: the approvers' queue. The approver is the
authenticated principal (enforcer.server.auth), never a request field;
everything else is the pipeline's approval loop (enforcer.pipeline.approvals)."""

from __future__ import annotations

import grpc

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.errors import AeclError, InvalidRequest, NotAuthorised
from enforcer.pipeline.approvals import Approvals, WatcherLagged
from enforcer.pipeline.pipeline import Pipeline
from enforcer.server import convert
from enforcer.server.auth import current_principal
from enforcer.server.status import abort


class ApprovalService(pb_grpc.ApprovalServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.approvals: Approvals = pipeline.approvals

    async def ListApprovals(self, request: pb.ListApprovalsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListApprovalsResponse:
        try:
            status = None
            if request.status != pb.APPROVAL_STATUS_UNSPECIFIED:
                status = convert.STATUS_NAMES.get(request.status)
                if status is None:
                    raise InvalidRequest("status", f"unknown approval status {request.status}")
            rows, token = await self.approvals.list(status=status, agent_id=request.agent_id or None,
                                                    task_id=request.task_id or None, page_size=request.page_size,
                                                    page_token=request.page_token)
        except AeclError as e:
            await self._refused("ListApprovals", e, {"agent_id": request.agent_id, "task_id": request.task_id})
            await abort(context, e)
        return pb.ListApprovalsResponse(approvals=[convert.approval_message(a) for a in rows], next_page_token=token)

    async def GetApproval(self, request: pb.GetApprovalRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetApprovalResponse:
        try:
            a = await self.approvals.get(request.approval_id)
        except AeclError as e:
            await self._refused("GetApproval", e, {})
            await abort(context, e)
        return pb.GetApprovalResponse(approval=convert.approval_message(a))

    async def ResolveApproval(self, request: pb.ResolveApprovalRequest,
                              context: grpc.aio.ServicerContext) -> pb.ResolveApprovalResponse:
        principal = current_principal()
        try:
            if request.resolution not in (pb.RESOLUTION_APPROVE, pb.RESOLUTION_REJECT):
                error = InvalidRequest("resolution", "must be RESOLUTION_APPROVE or RESOLUTION_REJECT")
                await self._refused("ResolveApproval", error, {"approval_id": request.approval_id[:256]})
                raise error
            if principal is None:  # the interceptor always sets one; never resolve anonymously
                raise NotAuthorised("no_principal", "no authenticated approver")
            # resolve() logs its own refusals.
            a, event_id = await self.approvals.resolve(
                request.approval_id, approve=request.resolution == pb.RESOLUTION_APPROVE,
                comment=request.comment, approver=principal)
        except AeclError as e:
            await abort(context, e)
        return pb.ResolveApprovalResponse(approval=convert.approval_message(a), event_id=event_id)

    async def WatchApprovals(self, request: pb.WatchApprovalsRequest, context: grpc.aio.ServicerContext):
        try:
            async for a in self.approvals.changes(include_pending=request.include_pending):
                yield pb.WatchApprovalsResponse(approval=convert.approval_message(a))
        except WatcherLagged as e:
            await abort(context, e)

    async def _refused(self, rpc: str, error: AeclError, fields: dict) -> None:
        await self.pipeline.log_invalid(rpc, error, fields, principal=current_principal())
